"""The embedded Ray dies with its driver, however the driver dies.

Ray fate-shares its GCS and raylet with the driver that started them, but
processes the raylet starts (its agents, workers) can outlive a driver killed
with SIGKILL, reparented to init, and some of them ignore SIGTERM.

``Reaper`` starts a small watcher process and gives it a mark, a token unique
to this driver's Ray, which ``Reaper.marking()`` puts in the environment while
the driver starts Ray: every process Ray starts inherits it, wherever it ends
up in the process tree.  A process is this driver's Ray if its environment
carries the mark or its parent was one when the watcher first saw it; the
watcher looks every POLL_S and remembers what it saw, because Ray's agents
overwrite their environment with their process title soon after they start.
A process is known by pid and start time, so a reused pid is never taken for
it, and is signalled through a pidfd, so it cannot be reused in between.

When the driver's end of a pipe closes (exit, crash, SIGKILL alike) the
watcher sends SIGTERM to each such process, SIGKILL to any still alive
TERM_GRACE_S later, and goes on looking until it has seen none for SETTLE_S,
so a process born while it was killing the others goes too.  A driver that
writes DONE first (after a clean ``ray.shutdown()``) lets it exit killing
nothing.  It never signals a process without the mark or a marked parent.

Run as ``python -m sweep.run.reaper <driver pid> <mark>`` with the pipe on stdin.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MARK = "ZAPSWEEP_RAY_MARK"  # the environment variable that carries the mark
POLL_S = 0.1  # how often the watcher looks for new processes
TERM_GRACE_S = 1.0  # SIGTERM to SIGKILL
REAP_STEP_S = 0.05
SETTLE_S = 0.5  # no member seen for this long: none is left
GIVE_UP_S = 30.0  # a process stuck in the kernel may never die: stop looking
DONE = b"done"

Process = tuple[int, str]  # (pid, start time in clock ticks since boot)
PF_KTHREAD = 0x00200000  # in /proc/<pid>/stat's flags


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, None if gone, a zombie or a
    kernel thread."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X") or int(fields[6]) & PF_KTHREAD:
        return None
    return int(fields[1]), fields[19]


def _carries(pid: int, entry: bytes) -> bool | None:
    """Whether the environment of ``pid`` holds ``entry``; None while it reads
    empty, as it does for a moment while the process execs."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours to read: not ours to kill either
        return False
    return entry in environ.split(b"\0") if environ else None


class Family:
    """The processes of one driver's Ray, as seen over successive looks at /proc.

    A look reads only processes it has not seen (their pid, parent, start time
    and environment), so it is cheap enough to repeat every POLL_S.  What it
    learnt stays: an agent that later overwrites its environment with its
    process title (as Ray's agents do) stays a member."""

    def __init__(self, mark: str, driver: int) -> None:
        self.entry = f"{MARK}={mark}".encode()
        self.driver = driver
        self.spare = {driver, os.getpid()}  # never members: the driver, this watcher
        self.members: dict[int, str] = {}  # pid -> start time
        self.strangers: dict[int, str] = {}  # looked at, unmarked: not read again

    def look(self, *, recheck: bool = False) -> dict[int, str]:
        """The live members now: marked, or children of a member.  ``recheck``
        reads every process again: a child the driver forked shows the mark
        only once it has exec'd."""
        pids = {int(e.name) for e in os.scandir("/proc") if e.name.isdigit()} - self.spare
        if recheck:
            self.strangers = {}
        fresh = {}  # pid -> (parent pid, start time) of the processes read now
        for pid in pids if recheck else pids - self.members.keys() - self.strangers.keys():
            if (st := _stat(pid)) is not None:
                fresh[pid] = st
            elif not recheck:
                self.strangers[pid] = ""  # a kernel thread or a zombie: not read again
        if recheck:  # gone, a zombie, or its pid reused
            self.members = {p: s for p, s in self.members.items() if fresh.get(p, (0, ""))[1] == s}
        else:
            self.members = {p: s for p, s in self.members.items() if p in pids}
            self.strangers = {p: s for p, s in self.strangers.items() if p in pids}
        new = {p: st for p, st in fresh.items() if p not in self.members}
        marked = {p: _carries(p, self.entry) for p in new}
        todo = [p for p, yes in marked.items() if yes]
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in new.items():
            children.setdefault(ppid, []).append(pid)
        todo += [c for p in self.members for c in children.get(p, [])]
        while todo:
            pid = todo.pop()
            if pid not in self.members:
                self.members[pid] = new[pid][1]
                todo.extend(children.get(pid, []))
        for pid, (ppid, start) in new.items():
            # Read again: one that reads empty, and the driver's child (it may yet exec).
            if pid not in self.members and marked[pid] is False and ppid != self.driver:
                self.strangers[pid] = start
        return dict(self.members)


def signal_process(who: Process, sig: int) -> bool:
    """Send ``sig`` to ``who`` if that very process (pid and start time) still runs."""
    pid, started = who
    try:
        fd = os.pidfd_open(pid)  # holds the process: its pid cannot be reused while open
    except ProcessLookupError:
        return False
    except OSError:  # no pidfd (Linux before 5.3): check, then signal by pid
        st = _stat(pid)
        try:
            return st is not None and st[1] == started and os.kill(pid, sig) is None
        except OSError:
            return False
    try:
        st = _stat(pid)
        if st is None or st[1] != started:
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def reap(family: Family, grace: float = TERM_GRACE_S, give_up: float = GIVE_UP_S) -> set[Process]:
    """SIGTERM each member, SIGKILL it ``grace`` s later if still alive; go on
    looking until none has been seen for SETTLE_S.  Returns those signalled."""
    termed: dict[Process, float] = {}
    start = last_seen = time.monotonic()
    while (now := time.monotonic()) - last_seen < SETTLE_S and now - start < give_up:
        for who in family.look(recheck=True).items():
            last_seen = now
            if who not in termed:
                if signal_process(who, signal.SIGTERM):
                    termed[who] = now
            elif now - termed[who] >= grace:
                signal_process(who, signal.SIGKILL)
        time.sleep(REAP_STEP_S)
    return set(termed)


def watch(driver: int, mark: str, pipe: int = 0) -> set[Process]:
    """Follow the family of ``mark`` until ``pipe`` closes; then reap it (unless
    the driver wrote DONE first: a clean exit).

    The pipe's write end is close-on-exec, so a child the driver forked holds
    it until it execs: once it closes, every such child shows its environment."""
    family = Family(mark, driver)
    while True:
        family.look()
        ready, _, _ = select.select([pipe], [], [], POLL_S)
        if ready:
            data = os.read(pipe, 4096)
            if data.endswith(DONE):
                return set()  # a clean exit: ray.shutdown() stopped everything
            if not data:
                break  # the driver died without saying goodbye
    return reap(family)


class Reaper:
    """Owns the watcher: ``close()`` on a clean exit, the kernel closes it otherwise."""

    def __init__(self) -> None:
        self.mark = f"{os.getpid()}-{secrets.token_hex(8)}"
        read, self._write = os.pipe()
        os.set_inheritable(self._write, False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(os.getpid()), self.mark],
            stdin=read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the driver's group does not stop it early
            close_fds=True,
        )
        os.close(read)

    @contextmanager
    def marking(self) -> Iterator[None]:
        """Processes started inside (and all they start) belong to this driver's Ray."""
        os.environ[MARK] = self.mark
        try:
            yield
        finally:
            os.environ.pop(MARK, None)

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
    watch(int(sys.argv[1]), sys.argv[2])
