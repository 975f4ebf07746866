"""What the console scripts share: a user's error is one line and exit code 2.

``OneLineParser`` is argparse's parser with its usage errors on one line
(``prog: error: ... (see --help)``) instead of the usage text and the error.
``zapsweep``, ``zapsweep_report``, ``zapsweep_calibrate`` and ``zapsweep_trace``
are the scripts' entry points: they import their command's module (Hydra,
Polars, Ray: a second or so) only once they can say, in one line, that a
Ctrl-C came meanwhile.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130  # the shell's code for a process ended by SIGINT


def launch(module: str, prog: str) -> NoReturn:
    """Import ``module`` and exit with what its ``main()`` returns; a Ctrl-C
    that reaches here (while importing, or one ``main`` does not handle) is
    one line and exit code 130, not a traceback."""
    try:
        main = importlib.import_module(module).main
        code = main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    sys.exit(code)


def zapsweep() -> NoReturn:
    launch("sweep.run.cli", "zapsweep")


def zapsweep_report() -> NoReturn:
    launch("sweep.report.cli", "zapsweep-report")


def zapsweep_calibrate() -> NoReturn:
    launch("sweep.calibrate.cli", "zapsweep-calibrate")


def zapsweep_trace() -> NoReturn:
    launch("sweep.trace.cli", "zapsweep-trace")


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
