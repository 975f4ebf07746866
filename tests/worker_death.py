"""A sweep on a two-node ``ray.cluster_utils.Cluster`` whose worker node is removed
while one of its tasks runs; prints what came out as JSON.

Run by tests/test_faults.py in a subprocess of its own, so this cluster never
meets the test session's local Ray.  Token authentication stays on: the caller
passes RAY_AUTH_MODE=token and a fresh RAY_AUTH_TOKEN.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray
from hydra import compose, initialize_config_module
from ray.cluster_utils import Cluster

from sweep.dataset import open_dataset
from sweep.run.cli import sweep
from sweep.run.config import register_configs

OVERRIDES = [
    "grid=smoke",
    "engine=reference",
    "report=false",
    "progress.bar=false",
    "grid.paging_levels=[4]",
    "grid.page_size=[4K]",
    "grid.guest_memory=[1GiB,2GiB]",
    "grid.zap_levels=[root,two_pass]",
    "grid.dirty_ratio=[0.5]",
    "grid.seed=[0,1,2,3]",
    "grid.exclude=[]",
    "batch.size=1",
    "batch.max_in_flight=2",
    "ray.max_retries=3",
]


def _running_task(raylet_pid: int) -> int | None:
    """The pid of a worker process of that raylet executing a batch task, if any."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != raylet_pid:
                continue
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"run_range_task" in cmdline:
            return int(stat.parent.name)
    return None


def main(run_dir: Path) -> dict:
    temp_dir = tempfile.mkdtemp(prefix="zw", dir="/tmp")  # short: socket paths are limited
    head_args = {"num_cpus": 1, "include_dashboard": False, "temp_dir": temp_dir}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    worker = cluster.add_node(num_cpus=1, temp_dir=temp_dir)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    worker_id = worker.node_id
    raylet = worker.all_processes["raylet"][0].process.pid
    register_configs()  # the schemas conf/config.yaml names, as the zapsweep command does
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=OVERRIDES)
    out: dict = {"worker_node": worker_id}

    def run():
        try:
            out["manifest"] = sweep(cfg, run_dir)
        except BaseException as err:
            out["error"] = repr(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    victim = None
    seen: dict[Path, list[str]] = {}
    while thread.is_alive() and time.monotonic() < deadline:
        # Once the worker node has delivered a row, wait for its next task to start.
        if worker_id in _workers(run_dir, seen):
            victim = _running_task(raylet)
            if victim is not None:
                break
        time.sleep(0.01)
    out["killed_task_pid"] = victim
    cluster.remove_node(worker)  # the raylet and its workers die, mid-task
    out["removed_at_rows"] = _rows(run_dir)
    thread.join(timeout=240)
    table = open_dataset(run_dir / "results").to_table(columns=["cell_id", "status", "worker"])
    out["ids"] = table["cell_id"].to_pylist()
    out["status"] = table["status"].to_pylist()
    out["workers"] = table["worker"].to_pylist()
    ray.shutdown()
    cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)
    return out


def _workers(run_dir: Path, seen: dict[Path, list[str]]) -> set[str]:
    for path in (run_dir / "results").rglob("*.parquet"):
        if path not in seen:
            seen[path] = pq.read_table(path, columns=["worker"])["worker"].to_pylist()
    return {w for workers in seen.values() for w in workers}


def _rows(run_dir: Path) -> int:
    files = (run_dir / "results").rglob("*.parquet")
    return sum(pq.read_metadata(f).num_rows for f in files)


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), default=str))
