"""A sweep on a two-node ``ray.cluster_utils.Cluster`` whose worker node is removed
while one of its tasks runs; prints what came out as JSON.

Run by tests/test_faults.py in a subprocess of its own, so this cluster never
meets the test session's local Ray.  Token authentication stays on: the caller
passes RAY_AUTH_MODE=token and a fresh RAY_AUTH_TOKEN.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
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
    "grid.guest_memory=[256MiB,512MiB]",  # a quarter to half a second a cell: tasks to catch
    "grid.zap_levels=[root,two_pass]",
    "grid.dirty_ratio=[0.5]",
    "grid.seed=[0,1,2,3]",
    "grid.exclude=[]",
    "batch.size=1",
    "batch.max_in_flight=2",
    "ray.max_retries=3",
]


TASK_TITLE = b"run_range_task"  # a worker's process title while it runs a range


def _running_task(raylet_pid: int) -> int | None:
    """The pid of a worker process of that raylet executing a range task, if any."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != raylet_pid:
                continue
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if TASK_TITLE in cmdline:
            return int(stat.parent.name)
    return None


def _freeze(pid: int) -> int | None:
    """SIGSTOP ``pid`` if it still runs a range task; a pidfd on it, or None."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    signal.pidfd_send_signal(fd, signal.SIGSTOP)
    try:
        running = TASK_TITLE in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        running = False
    if not running:  # it finished in between: let it take the next task
        signal.pidfd_send_signal(fd, signal.SIGCONT)
        os.close(fd)
        return None
    return fd


def main(run_dir: Path) -> dict:
    temp_dir = tempfile.mkdtemp(prefix="zw", dir="/tmp")  # short: socket paths are limited
    # Cluster writes the head's address to <default temp dir>/ray/ray_current_cluster
    # whatever temp_dir its nodes get; point that default at this cluster's own
    # directory, so it needs no /tmp/ray and leaves nothing for another ray.init().
    os.environ["RAY_TMPDIR"] = temp_dir
    os.mkdir(os.path.join(temp_dir, "ray"))
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
    victim = held = None
    seen: dict[Path, list[str]] = {}
    while thread.is_alive() and time.monotonic() < deadline:
        # Once the worker node has delivered a row, wait for its next task to start,
        # and freeze it there: however fast the engine, it cannot finish now.
        if worker_id in _workers(run_dir, seen) and (victim := _running_task(raylet)):
            held = _freeze(victim)
            if held is not None:
                break
        time.sleep(0.01)
    out["killed_task_pid"] = victim if held is not None else None
    cluster.remove_node(worker)  # the raylet and its workers die, the frozen task with them
    out["removed_at_rows"] = _rows(run_dir)
    if held is not None:  # stopped, it may not see its raylet go
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(held, signal.SIGKILL)
        os.close(held)
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
