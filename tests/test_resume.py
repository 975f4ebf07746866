"""Resume: a sweep whose driver is killed mid-run, re-run into the same
directory, ends with every cell exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep.dataset import RunDir, check_dataset, open_dataset

ZAPSWEEP = str(Path(sys.executable).with_name("zapsweep"))
# 64 cells, two grid combinations per task, one task at a time on one CPU.
ARGS = [
    "grid=smoke",
    "engine=reference",
    "report=false",
    "progress.bar=false",
    "batch.size=2",
    "batch.max_in_flight=1",
    "ray.num_cpus=1",
]


def _zapsweep(run_dir: Path, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(
        [ZAPSWEEP, *ARGS, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        **kw,
    )


def _parts(run_dir: Path) -> int:
    return len(list((run_dir / "results").rglob("*.parquet")))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_driver_then_rerun_gives_every_cell_exactly_once(tmp_path):
    run_dir = tmp_path / "run"
    driver = _zapsweep(run_dir)
    deadline = time.monotonic() + 120
    while _parts(run_dir) < 6 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    # Frozen at once, so the count stands: 6 files, a few more at most, of dozens.
    driver.send_signal(signal.SIGSTOP)
    assert driver.poll() is None, "the sweep finished before it could be interrupted"
    driver.send_signal(signal.SIGKILL)  # no clean-up of any kind
    driver.wait(timeout=30)

    partial = open_dataset(run_dir / "results").to_table().num_rows
    ids_before = check_dataset(RunDir.at(run_dir)).cell_ids
    assert 0 < partial == len(ids_before)

    rerun = _zapsweep(run_dir)
    assert rerun.wait(timeout=240) == 0
    table = open_dataset(run_dir / "results").to_table(columns=["cell_id", "status"])
    ids = table["cell_id"].to_pylist()
    import json

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert len(ids) == len(set(ids)) == manifest["counts"]["valid"]
    assert partial < len(ids)
    assert manifest["counts"]["resumed"] == partial
    assert ids_before <= set(ids)
    assert set(table["status"].to_pylist()) == {"ok"}
    assert not (run_dir / ".staging").exists()
