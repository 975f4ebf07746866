"""One sweep per run directory: an exclusive lock on ``<run_dir>/.zapsweep.lock``.

The lock is a ``flock`` held on the file for the life of the sweep, so the
kernel drops it when the holder dies, however it dies (SIGKILL included): a
lock left behind by a dead driver is stale by construction and the next run
takes it over.  The file records the holder (pid, host, start time, command)
so a refused sweep can say who holds the directory, and a run that takes over
a stale lock can say whose it was.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sweep.dataset import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started_at: str
    command: str = ""

    @classmethod
    def me(cls) -> LockHolder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            command=" ".join(sys.argv)[:500],
        )

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["started_at"]),
                       str(data.get("command", "")))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool | None:
        """Whether the holder still runs: None when it is on another host."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.started_at}"


class RunDirLocked(RuntimeError):
    """Another sweep holds the run directory."""

    def __init__(self, run_dir: Path, holder: LockHolder | None):
        self.run_dir = run_dir
        self.holder = holder
        who = holder.describe() if holder else "another process (no holder recorded)"
        super().__init__(
            f"{run_dir} is in use by another zapsweep: {who} "
            f"(lock {RunDir.at(run_dir).lock}). Wait for it to finish, or pick another "
            "directory with hydra.run.dir=..."
        )


@contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[LockHolder]:
    """Hold ``run_dir`` for this process, or raise :class:`RunDirLocked` at once."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = RunDir.at(run_dir).lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise
            raise RunDirLocked(run_dir, LockHolder.parse(_read(fd))) from None
        previous = LockHolder.parse(_read(fd))
        if previous is not None:
            state = {False: "no longer running", None: "on another host", True: "pid reused"}
            log.warning(
                "taking over the stale lock of %s (%s; its sweep did not finish)",
                previous.describe(),
                state[previous.alive()],
            )
        me = LockHolder.me()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(asdict(me)) + "\n").encode(), 0)
        try:
            yield me
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves no holder behind
    finally:
        os.close(fd)  # releases the flock


def check_free(run_dir: str | Path) -> None:
    """Raise :class:`RunDirLocked` if a sweep holds ``run_dir`` now; take nothing.

    For the command line, before Hydra writes its ``.hydra/`` files into a
    directory a running sweep owns; ``run_dir_lock`` still decides.
    """
    path = RunDir.at(run_dir).lock
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise
            raise RunDirLocked(Path(run_dir), LockHolder.parse(_read(fd))) from None
    finally:
        os.close(fd)


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace")
