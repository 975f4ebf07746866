"""The embedded Ray dies with its driver, however the driver dies.

Ray fate-shares its GCS and raylet with the driver that started them, but the
raylet's agents (dashboard agent, runtime-env agent) can outlive a driver
killed with SIGKILL.  ``Reaper`` starts a small watcher process that keeps a
list of the driver's descendants (pid + start time, so a reused pid is never
touched) while the driver runs; when the driver's end of a pipe closes (exit,
crash, SIGKILL alike), it SIGKILLs those still alive, by pid, and exits.
It never looks beyond the driver's own process tree.

Run as ``python -m sweep.run.reaper <driver pid>`` with the pipe on stdin.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

POLL_S = 0.3
DONE = b"done"


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else (int(fields[1]), fields[19])


def descendants(root: int) -> dict[int, str]:
    """pid -> start time of every live process under ``root`` (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[0], []).append(int(entry.name))
            started[int(entry.name)] = st[1]
    out: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in out:
            out[pid] = started[pid]
            todo.extend(children.get(pid, []))
    return out


def watch(driver: int, pipe: int = 0) -> list[int]:
    """Track ``driver``'s tree until ``pipe`` closes; then kill what is left of it
    (unless the driver wrote DONE first: a clean exit)."""
    seen: dict[int, str] = {}
    while True:
        seen.update(descendants(driver))
        seen.pop(os.getpid(), None)
        ready, _, _ = select.select([pipe], [], [], POLL_S)
        if ready:
            data = os.read(pipe, 4096)
            if data.endswith(DONE):
                return []  # a clean exit: ray.shutdown() stopped everything
            if not data:
                break  # the driver died without saying goodbye
    for pid, started in list(seen.items()):  # children born since the last look
        st = _stat(pid)
        if st is not None and st[1] == started:
            seen.update(descendants(pid))
    killed = []
    for pid, started in seen.items():
        st = _stat(pid)
        if st is not None and st[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


class Reaper:
    """Owns the watcher: ``close()`` on a clean exit, the kernel closes it otherwise."""

    def __init__(self) -> None:
        read, self._write = os.pipe()
        os.set_inheritable(self._write, False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sweep.run.reaper", str(os.getpid())],
            stdin=read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the driver's group does not stop it early
            close_fds=True,
        )
        os.close(read)

    def close(self, timeout: float = 10) -> None:
        """After a clean ``ray.shutdown()``: the watcher exits, killing nothing."""
        if self._write >= 0:
            os.write(self._write, DONE)
            os.close(self._write)
            self._write = -1
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
