"""Faults mid-sweep: a worker node dies, the driver is SIGKILLed again and again.

Both are slow (each starts Ray of its own) and both still run in CI.
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

ARGS = [
    "grid=smoke",
    "engine=reference",
    "report=false",
    "progress.bar=false",
    "grid.seed=[0,1,2]",
    "batch.size=2",
    "batch.max_in_flight=1",
    "ray.num_cpus=1",
]


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    return children


def _identity(pid: int) -> tuple[int, str, str] | None:
    """(pid, start time, command) of a live process: a reused pid is another process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except (OSError, IndexError):
        return None
    return None if stat[0] == "Z" else (pid, stat[19], cmd)


def _descendants(pid: int) -> set[tuple[int, str, str]]:
    children = _children_map()
    out, todo = set(), list(children.get(pid, []))
    while todo:
        p = todo.pop()
        if (who := _identity(p)) is not None:
            out.add(who)
        todo.extend(children.get(p, []))
    return out


def _alive(family: set[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    return [who for who in family if _identity(who[0]) == who]


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


def _started_at(run_dir: Path) -> str | None:
    """When the run that last wrote the manifest started (None: no manifest yet)."""
    try:
        return json.loads((run_dir / "manifest.json").read_text())["started_at"]
    except (OSError, ValueError, KeyError):
        return None


def _run_until(run_dir: Path, watcher: Watcher, delay: float | None, parts: int | None):
    """Start zapsweep; SIGKILL it after ``delay`` s or once ``parts`` files exist.
    Returns (killed, the driver's descendants at the kill)."""
    driver = subprocess.Popen(
        [ZAPSWEEP, *ARGS, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    start = time.monotonic()
    family: set[tuple[int, str, str]] = set()
    while driver.poll() is None and time.monotonic() - start < 120:
        have = watcher.check()
        family |= _descendants(driver.pid)
        if (delay is not None and time.monotonic() - start >= delay) or (
            parts is not None and have >= parts
        ):
            break
        time.sleep(0.01)
    if driver.poll() is not None:
        return False, family
    family |= _descendants(driver.pid)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    return True, family


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_driver_sigkilled_five_times_then_resumed_every_cell_once(tmp_path):
    seed = int(os.environ.get("ZAPSWEEP_KILL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    watcher = Watcher(run_dir / "results")
    # Moments: while Python and Hydra start, while Ray starts (or a little
    # later), then at random numbers of placed files (at least one more each).
    plan = [(rng.uniform(0.2, 1.0), None), (rng.uniform(1.5, 4.0), None)]
    plan += [(rng.uniform(4.0, 9.0), None)] + [(None, None)] * 2
    kills = []
    wrote_manifest = 0  # killed runs that had written their manifest (status running)
    for delay, parts in plan:
        if delay is None:
            parts = watcher.check() + rng.randint(1, 6)
        before = _started_at(run_dir)
        killed, family = _run_until(run_dir, watcher, delay, parts)
        assert killed, f"the sweep finished before kill {len(kills) + 1} (seed {seed})"
        kills.append((delay, parts, watcher.check()))
        wrote_manifest += _started_at(run_dir) != before
        # The driver's Ray (GCS, raylet, workers) goes down with it.
        deadline = time.monotonic() + 30
        while (alive := _alive(family)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid, _, _ in alive:  # do not leak them into the session, whatever the verdict
            os.kill(pid, signal.SIGKILL)
        assert not alive, f"Ray processes outlived the killed driver: {alive} (seed {seed})"
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
    assert len(ids) == len(set(ids)) == manifest["counts"]["valid"], (seed, kills)
    assert set(table["status"].to_pylist()) == {"ok"}
    assert kills[-1][2] < len(ids), "the last kill came after the last file"
    # Each killed run that wrote its manifest is recorded (the two killed at placed
    # files did; the ones killed while Python, Hydra or Ray started may not have).
    assert len(manifest["previous_runs"]) == wrote_manifest >= 2, (seed, kills)
    assert not (run_dir / ".staging").exists()
