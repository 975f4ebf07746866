"""Faults mid-sweep: a worker node dies; the driver is SIGKILLed five times and
resumed; the driver is SIGKILLed at 20 moments of Ray's start.

All are slow (each starts Ray of its own) and all still run in CI.  The five
kills are placed by what the driver has done (a config write it cannot get
past, processes started, files placed), never by how long it took; the 20 are
placed by time (or at the first result, if it comes sooner), since what they
check, that nothing of the driver's Ray is left, must hold at any moment.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sweep.dataset import open_dataset
from sweep.run.reaper import MARK

HERE = Path(__file__).parent
ZAPSWEEP = str(Path(sys.executable).with_name("zapsweep"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYDRA_FULL_ERROR")}
    return {**env, **extra}


# A worker node dies ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_worker_node_removed_mid_task_every_cell_once(tmp_path):
    env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    proc = subprocess.run(
        [sys.executable, str(HERE / "worker_death.py"), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in out, out["error"]
    assert out["killed_task_pid"], "no task was running on the worker node when it was removed"
    manifest = out["manifest"]
    ids = out["ids"]
    assert 0 < out["removed_at_rows"] < len(ids)  # the sweep went on after the node died
    assert len(ids) == len(set(ids)) == manifest["counts"]["valid"] == 16
    assert set(out["status"]) == {"ok"}  # the lost task was retried, not given up
    assert manifest["counts"]["lost_batches"] == 0
    # Rows from both nodes: the dead one's earlier rows stay, its last task ran again.
    assert out["worker_node"] in out["workers"] and len(set(out["workers"])) == 2


# The driver is SIGKILLed --------------------------------------------------------------------

START = ["grid=smoke", "engine=reference", "report=false", "progress.bar=false", "ray.num_cpus=1"]
ARGS = [
    *START,
    "grid.seed=[0,1,2]",  # 192 cells in 96 files: the kills below leave most to write
    "batch.size=2",
    "batch.max_in_flight=1",
]
CELLS = 192
TAG = "ZAPSWEEP_TEST_DRIVER"  # in a driver's environment, so in all it starts

# Ray's default temp dir, where the drivers' sessions go.
RAY_TMP = Path(os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp")

Identity = tuple[int, str, str]  # pid, start time (a reused pid is another), command line


def _identity(pid: int) -> Identity | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except (OSError, IndexError):
        return None
    return None if stat[0] in ("Z", "X") else (pid, stat[19], cmd)


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return None


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _holds_file_under(pid: int, roots: list[str]) -> bool:
    try:
        fds = os.scandir(f"/proc/{pid}/fd")
        links = [os.readlink(f"/proc/{pid}/cwd")]
        for fd in fds:
            try:
                links.append(os.readlink(fd.path))
            except OSError:
                continue
    except OSError:
        return False
    return any(link.startswith(root) for link in links for root in roots)


class Driver:
    """One ``zapsweep`` run and every process it starts, found by a tag in its
    environment that they inherit.  Each is noted when first seen: Ray's agents
    overwrite their environment with their process title soon after."""

    def __init__(self, run_dir: Path, args: list[str] = ARGS):
        token = secrets.token_hex(8)
        self.tag = f"{TAG}={token}".encode()
        self.wall_start = time.time()
        self.proc = subprocess.Popen(
            [ZAPSWEEP, *args, f"hydra.run.dir={run_dir}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(**{TAG: token}),
        )
        self.start = time.monotonic()
        self.family: dict[int, Identity] = {}
        self.born: dict[int, float] = {}  # pid -> when first seen (s after start)
        self.grandchildren: set[int] = set()  # seen with a parent other than the driver
        self.ray: set[Identity] = set()  # those that carried the mark of the driver's Ray
        self.judged: set[int] = set()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def look(self) -> None:
        pids = {int(e.name) for e in os.scandir("/proc") if e.name.isdigit()}
        self.judged &= pids  # a pid gone may come back as another process
        for pid in pids - self.judged:
            environ = _environ(pid)
            if environ == [b""]:
                continue  # it reads empty for a moment while the process execs
            if self.tag in environ and (who := _identity(pid)) is not None:
                if pid not in self.born:
                    self.born[pid] = self.elapsed()
                    if _parent(pid) not in (self.proc.pid, None):
                        self.grandchildren.add(pid)
                self.family[pid] = who
                if not any(e.startswith(f"{MARK}=".encode()) for e in environ):
                    continue  # the driver, its watcher, or a child of it yet to exec Ray
                self.ray.add(who)
            self.judged.add(pid)

    def kill_when(self, ready, watcher: Watcher) -> bool:
        """SIGKILL the driver once ``ready(self, files placed)``; False if it ended first."""
        while (killed := self.kill_if(ready, watcher)) is None:
            time.sleep(0.005)
        return killed

    def kill_if(self, ready, watcher: Watcher) -> bool | None:
        """One look, and SIGKILL if ``ready(self, files placed)``, frozen first
        (SIGSTOP) so that nothing changes between that look and the kill: True
        once killed, False if it ended first, None if not yet."""
        if self.proc.poll() is not None:
            return False
        self.look()
        if not ready(self, watcher.check()) and self.elapsed() < 120:
            return None
        self.proc.send_signal(signal.SIGSTOP)
        self.look()
        watcher.check()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        return True

    def leftovers(self) -> list[Identity]:
        """Its processes still alive: those seen, those tagged now, and any with
        a file open in a session directory of its Ray."""
        self.look()
        alive = {who for who in self.family.values() if _alive(who)}
        sessions = [
            str(path)
            for path in (RAY_TMP / "ray").glob(f"session_*_{self.proc.pid}")
            if path.stat().st_mtime >= self.wall_start - 1
        ]
        if sessions:
            for entry in os.scandir("/proc"):
                pid = int(entry.name) if entry.name.isdigit() else 0
                if pid and _holds_file_under(pid, sessions) and (who := _identity(pid)):
                    alive.add(who)
        return sorted(alive)

    def reaped(self, within: float) -> list[Identity]:
        """Wait up to ``within`` s for its processes to end; SIGKILL any left (not to
        leak them, whatever the verdict) and return them."""
        deadline = time.monotonic() + within
        while (alive := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return _kill_all(alive)


def _alive(who: Identity) -> bool:
    now = _identity(who[0])
    return now is not None and now[1] == who[1]  # the command line may change (exec, title)


def _kill_all(alive: list[Identity]) -> list[Identity]:
    for who in alive:
        if _alive(who):
            os.kill(who[0], signal.SIGKILL)
    return alive


def _manifest_text(run_dir: Path) -> str | None:
    """The run's manifest as it is now (None: none yet).  Each run that writes it
    adds the one before to its history, so a new write never reads the same."""
    try:
        return (run_dir / "manifest.json").read_text()
    except OSError:
        return None


class Watcher:
    """Reads every file that appears in results/, whole: none may ever be partial."""

    def __init__(self, results: Path):
        self.results = results
        self.checked: dict[Path, int] = {}

    def check(self) -> int:
        for path in self.results.rglob("*"):
            if path.is_file() and path not in self.checked:
                assert path.suffix == ".parquet", f"stray file in results/: {path}"
                self.checked[path] = pq.read_table(path).num_rows  # raises if partial
        return len(self.checked)

    def rows(self) -> int:
        return sum(self.checked.values())


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_driver_sigkilled_five_times_then_resumed_every_cell_once(tmp_path):
    """Kills at five moments, each chosen by what the driver has done, not by
    the time it took: while Python and Hydra start, while Ray starts, and three
    times with results partly written."""
    seed = int(os.environ.get("ZAPSWEEP_KILL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    watcher = Watcher(run_dir / "results")
    kills = []
    wrote_manifest = []  # per kill: did the killed run write its manifest?

    def kill(driver: Driver, ready, before: str | None) -> None:
        assert driver.kill_when(ready, watcher), f"the sweep ended before kill {len(kills) + 1}"
        kills.append((round(driver.elapsed(), 2), len(driver.ray), watcher.check(), watcher.rows()))
        wrote_manifest.append(_manifest_text(run_dir) != before)
        left = driver.reaped(within=10)  # its Ray (GCS, raylet, agents, workers) goes with it
        assert not left, f"Ray processes outlived the killed driver: {left} (seed {seed}, {kills})"

    # 1. Python and Hydra start.  Hydra cannot get past writing its config:
    # a FIFO stands in its place, and nobody opens it for reading.
    fifo = run_dir / ".hydra" / "config.yaml"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    moment = rng.uniform(0.2, 1.0)
    driver = Driver(run_dir)
    kill(driver, lambda d, _: d.elapsed() >= moment, None)
    fifo.unlink()
    assert kills[-1][1:3] == (0, 0), kills  # no Ray yet, no file

    # 2. Ray starts: once it has started n processes (GCS, raylet, ...), before
    # any result.
    n = rng.randint(1, 5)
    before = _manifest_text(run_dir)
    driver = Driver(run_dir)
    kill(driver, lambda d, files: len(d.ray) >= n or files > 0, before)
    assert kills[-1][1] >= n and kills[-1][2] == 0, kills

    # 3-5. Results partly written: a random number of files more each time.
    for _ in range(3):
        files = watcher.check() + rng.randint(1, 6)
        before = _manifest_text(run_dir)
        driver = Driver(run_dir)
        kill(driver, lambda _, placed, files=files: placed >= files, before)
        assert kills[-1][2] >= files and kills[-1][3] < CELLS, kills

    final = subprocess.run(
        [ZAPSWEEP, *ARGS, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=240,
    )
    assert final.returncode == 0, final.stderr[-3000:]
    watcher.check()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    table = open_dataset(run_dir / "results").to_table(columns=["cell_id", "status"])
    ids = table["cell_id"].to_pylist()
    assert manifest["status"] == "complete"
    assert len(ids) == len(set(ids)) == manifest["counts"]["valid"] == CELLS, (seed, kills)
    assert set(table["status"].to_pylist()) == {"ok"}
    assert kills[-1][3] < len(ids), "the last kill came after the last file"
    # Every run killed after writing its manifest is in its history: the three
    # killed with files placed, and the one killed while Ray started if Ray was
    # up by then (the manifest is written once Ray is).
    assert wrote_manifest[0] is False and wrote_manifest[2:] == [True] * 3, wrote_manifest
    runs = [r["status"] for r in manifest["previous_runs"]]
    assert runs == ["running"] * sum(wrote_manifest), (manifest, wrote_manifest)
    assert not (run_dir / ".staging").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_driver_killed_at_20_moments_of_ray_start_leaves_none_of_its_ray(tmp_path):
    """SIGKILL at 20 moments from 0.5 to 5 s after start (Python, Hydra, then
    Ray's processes one after another): 10 s after each kill, nothing the driver
    started is left.  Every other kill comes 50 ms after the first process born
    after its moment to a parent other than the driver (a raylet's agent or
    worker): one the watcher may not have seen yet, whose parent dies with the
    driver.  A kill comes at the first result if that is earlier (Ray has
    started, on a machine fast enough), and the sweep has dozens of files to go
    then, so no driver ends before its kill.  Two drivers run at a time, and the
    next ones while the last ones' 10 s run."""
    moments = [0.5 + 4.5 * i / 19 for i in range(20)]

    def ready(i: int, moment: float):
        if i % 2 == 0:
            return lambda d, files: files > 0 or d.elapsed() >= moment

        def after_a_birth(d: Driver, files: int) -> bool:
            born = [d.born[p] for p in d.grandchildren if d.born[p] >= moment]
            return files > 0 or (bool(born) and d.elapsed() >= min(born) + 0.05)

        return after_a_birth

    waiting: list[tuple[float, float, Driver]] = []  # (check at, moment, driver)
    found: dict[float, list[Identity]] = {}
    stages = []

    def check(everything: bool) -> None:
        while waiting and (everything or waiting[0][0] <= time.monotonic()):
            at, moment, driver = waiting.pop(0)
            time.sleep(max(0.0, at - time.monotonic()))
            if left := _kill_all(driver.leftovers()):
                found[moment] = left

    todo = list(enumerate(moments))
    lanes: list[tuple[float, Driver, Watcher, object]] = []  # two drivers at a time
    while todo or lanes:
        while todo and len(lanes) < 2:
            i, moment = todo.pop(0)
            run_dir = tmp_path / f"run{i}"
            driver = Driver(run_dir)
            lanes.append((moment, driver, Watcher(run_dir / "results"), ready(i, moment)))
        for lane in list(lanes):
            moment, driver, watcher, when = lane
            if (killed := driver.kill_if(when, watcher)) is not None:
                assert killed, f"the sweep ended before its kill at {moment} s"
                stages.append((round(driver.elapsed(), 2), len(driver.ray), watcher.check()))
                waiting.append((time.monotonic() + 10, moment, driver))
                lanes.remove(lane)
        check(everything=False)
        time.sleep(0.005)
    check(everything=True)
    assert not found, f"left 10 s after the kill: {found} (moment, Ray processes, files: {stages})"
