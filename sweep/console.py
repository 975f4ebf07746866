"""What the console scripts share: a user's error is one line and exit code 2.

``OneLineParser`` is argparse's parser with its usage errors on one line
(``prog: error: ... (see --help)``) instead of the usage text and the error.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

USER_ERROR_EXIT = 2


def user_error(prog: str, message: str) -> int:
    """Print ``prog: error: message`` (its first line) on stderr; return exit code 2."""
    first = (str(message).strip().splitlines() or ["error"])[0]
    print(f"{prog}: error: {first}", file=sys.stderr)
    return USER_ERROR_EXIT


def fail(prog: str, message: str) -> NoReturn:
    """``user_error``, then exit."""
    sys.exit(user_error(prog, message))


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {self.prog} --help)")


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: allowed a finite number > 0")
    return value
