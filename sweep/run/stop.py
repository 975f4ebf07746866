"""SIGINT and SIGTERM ask a sweep to stop: the files already placed stay, nothing is cut.

While the driver's loop runs, and while it is in Ray's core outside the loop
(starting the local Ray, warming the workers, shutting down: ``deferred``), a
signal only sets ``received``: the loop sees it within a poll, stops handing
out ranges and returns, so no result file is ever left half placed; after
Ray's calls return, ``check`` raises ``Stopped`` (as does an error they raised
after the signal).  An exception raised by a signal handler inside Ray's
core, between its C++ and Python frames, can leave it broken: a
``SystemError``, or a crash at exit.  Elsewhere (the dataset being checked, a
cluster being joined) the first signal raises ``Stopped`` at once.  A second
signal, while the sweep is already stopping, raises ``KeyboardInterrupt``:
the driver exits now, and the watcher of its local Ray still takes that Ray
down.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A SIGINT or SIGTERM arrived outside the driver's loop (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def exit_code(signum: int) -> int:
    """The shell's code for a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


class StopSignals:
    """Catches SIGINT and SIGTERM for the life of a ``with`` block (main thread only;
    elsewhere it changes nothing), restoring the previous handlers after."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._deferring = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def install(self) -> None:
        """(Re)install the handlers: ``ray.init`` puts a SIGTERM handler of its own in."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def requested(self) -> bool:
        return self.received is not None

    def check(self) -> None:
        """Raise ``Stopped`` if a signal came (while deferred)."""
        if self.received is not None:
            raise Stopped(self.received)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block a signal only sets ``received``; the code polls it
        (``requested``, ``check``).  An error raised in the block after a signal
        came is taken for its consequence (the terminal's Ctrl-C reaches the
        processes Ray is starting too): it becomes ``Stopped``.  Blocks nest.
        Leaving one puts the handlers back in, in case the block replaced them
        (``ray.init`` installs a SIGTERM handler of its own)."""
        outer, self._deferring = self._deferring, True
        try:
            yield
        except Exception:
            if self.received is not None:
                raise Stopped(self.received) from None
            raise
        finally:
            self._deferring = outer
            self.install()

    def _handle(self, signum: int, _frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # asked twice: stop now
        self.received = signum
        if not self._deferring:
            raise Stopped(signum)
