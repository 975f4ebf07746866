"""A real two-node Ray cluster (``ray start`` head + worker on this host)
running a sweep: rows come back from both nodes.

Each ``ray start --block`` process is stopped by its own pid; it takes its
Ray processes down with it.  The cluster has its own temp dir (so no other
``ray.init()`` on this host finds it) and token authentication on, with a
fresh token of its own in RAY_AUTH_TOKEN (so it does not depend on
~/.ray/auth_token).  Ray rewrites 127.0.0.1 to the host's address
for multi-node clusters on Linux, so the nodes register under that address.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest

from sweep.dataset import open_dataset

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], temp_dir: str, log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "ray"), "start", *args, "--num-cpus=1", f"--temp-dir={temp_dir}", "--block"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_started(proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Until ``ray start`` says the node's runtime started."""
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text():
        assert proc.poll() is None, f"ray start exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no node started:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


# A driver that joins the cluster and waits until it has N nodes alive.
NODES = """
import ray, sys, time
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + float(sys.argv[3])
while (alive := sum(x["Alive"] for x in ray.nodes())) < int(sys.argv[2]):
    if time.monotonic() > deadline:
        break
    time.sleep(0.1)
print(alive)
"""


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sweep_on_a_two_node_cluster_uses_both_nodes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    temp_dir = tempfile.mkdtemp(prefix="zr", dir="/tmp")  # short: socket paths are limited
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head_args = ["--head", "--node-ip-address=127.0.0.1", f"--port={port}"]
    head = _ray_start(
        [*head_args, "--include-dashboard=false"], temp_dir, tmp_path / "head.log", env
    )
    worker = None
    try:
        _wait_until_started(head, tmp_path / "head.log")
        worker = _ray_start(
            [f"--address={address}", "--node-ip-address=127.0.0.1"],
            temp_dir,
            tmp_path / "worker.log",
            env,
        )
        nodes = subprocess.run(  # while the worker node starts
            [sys.executable, "-c", NODES, address, "2", "90"],
            capture_output=True,
            text=True,
            env=env,
            timeout=150,
        )
        assert nodes.stdout.split() == ["2"], nodes.stdout + nodes.stderr[-3000:]
        run_dir = tmp_path / "run"
        sweep = subprocess.run(
            [
                str(BIN / "zapsweep"),
                "grid=smoke",
                "engine=reference",
                "report=false",
                "batch.size=2",
                f"ray.address={address}",
                f"hydra.run.dir={run_dir}",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
        )
        assert sweep.returncode == 0, sweep.stderr[-3000:]
    finally:
        for proc in (worker, head):
            if proc is not None:
                _stop(proc)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    table = open_dataset(run_dir / "results").to_table()
    workers = set(table["worker"].to_pylist())
    assert len(workers) == 2, workers
    ids = table["cell_id"].to_pylist()
    assert len(ids) == len(set(ids)) == manifest["counts"]["valid"]
    polars = pl.scan_parquet(run_dir / "results" / "**" / "*.parquet", hive_partitioning=True)
    assert polars.select(pl.len()).collect().item() == table.num_rows
    deadline = time.monotonic() + 30  # the nodes' processes exit shortly after them
    while (leftovers := _processes_under(temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers, f"Ray processes left running: {leftovers}"
    shutil.rmtree(temp_dir, ignore_errors=True)


def _processes_under(temp_dir: str) -> str:
    return subprocess.run(["pgrep", "-f", temp_dir], capture_output=True, text=True).stdout.strip()
