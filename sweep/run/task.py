"""The Ray task that runs one range of the grid on a worker.

Its own module, importing only Ray, the engine, ``sweep.run.cells`` and
pyarrow's core and Parquet writer: a worker imports the module of the function
it runs, and the driver's modules (Arrow datasets, Hydra, tqdm) would add most
of a second to every worker's start.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import ray

from engine import COST_FIELDS, CostModel
from sweep.dataset.writer import encode

from .cells import RangeResult, RunSettings, run_range
from .grid import Grid


def encoded_range(
    grid: Grid,
    settings: RunSettings,
    lo: int,
    hi: int,
    done: np.ndarray | None = None,
    metadata: dict[str, str] | None = None,
    worker: str = "local",
) -> RangeResult:
    """The range's result.  With ``metadata`` (the files' key-value metadata)
    its rows come back as Parquet files encoded here, ready for the driver to
    write; without, as an Arrow table for the driver to encode."""
    result = run_range(grid, settings, lo, hi, done, worker)
    if metadata is None or not result.rows.num_rows:
        return result
    start = time.perf_counter()
    files = encode(result.rows, metadata)
    result.counts.seconds += time.perf_counter() - start  # what the range cost this worker
    return dataclasses.replace(result, rows=None, files=files)


@ray.remote(num_cpus=1)
def run_range_task(
    grid: Grid,
    settings: RunSettings,
    lo: int,
    hi: int,
    done: np.ndarray | None,
    metadata: dict[str, str] | None = None,
) -> RangeResult:
    """``encoded_range`` on a worker, its rows named by the worker's node."""
    node = ray.get_runtime_context().get_node_id()
    return encoded_range(grid, settings, lo, hi, done, metadata, node)


# A one-cell sweep that each worker runs as the session starts (``warm_up``):
# per_level with a flush before each yield loads every compiled signature of
# the engine a grid uses.  Its costs (any will do) are given, not looked up by
# name, so that a worker whose working directory holds a ``conf/`` of its own
# never has to find a file.
WARM_UP_GRID = Grid.of(
    {"guest_memory": "16MiB", "resched": "tick", "zap_levels": "per_level", "flush_on_yield": True}
)
WARM_UP_SETTINGS = RunSettings("fast", CostModel("warm-up", 1, *([1000] * len(COST_FIELDS))))


def warm_up() -> RangeResult:
    """What the first range would otherwise wait for, done in this process:
    this module's imports (the engine, pyarrow's core and Parquet writer), the
    engine's compiled kernels (loaded on their first call), pyarrow's first
    conversion from Python objects (which imports pandas, when it is
    installed) and first Parquet file."""
    return encoded_range(WARM_UP_GRID, WARM_UP_SETTINGS, 0, 1, metadata={})


def warm_up_workers(cpus: int) -> list[ray.ObjectRef]:
    """The one-cell sweep as a range task on each of ``cpus`` workers: the
    driver sends this function to the cluster and reads its result once,
    before the sweep, too."""
    return [
        run_range_task.remote(WARM_UP_GRID, WARM_UP_SETTINGS, 0, 1, None, {}) for _ in range(cpus)
    ]
