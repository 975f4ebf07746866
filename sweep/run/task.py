"""The Ray task that runs one range of the grid on a worker.

Its own module, importing only Ray, the engine, ``sweep.run.cells`` and
pyarrow's core and Parquet writer: a worker imports the module of the function
it runs, and the driver's modules (Arrow datasets, Hydra, tqdm) would add most
of a second to every worker's start.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import ray

from engine import COST_FIELDS, CostModel, Scenario, simulate
from sweep.dataset.schema import rows_table
from sweep.dataset.writer import encode

from .cells import RangeResult, RunSettings, run_range
from .grid import Grid


@ray.remote(num_cpus=1)
def run_range_task(
    grid: Grid,
    settings: RunSettings,
    lo: int,
    hi: int,
    done: np.ndarray | None,
    metadata: dict[str, str] | None = None,
) -> RangeResult:
    """The range's result.  With ``metadata`` (the files' key-value metadata)
    its rows come back as Parquet files encoded here, ready for the driver to
    write; without, as an Arrow table for the driver to encode."""
    result = run_range(grid, settings, lo, hi, done, ray.get_runtime_context().get_node_id())
    if metadata is None or not result.rows.num_rows:
        return result
    return dataclasses.replace(result, rows=None, files=encode(result.rows, metadata))


@ray.remote(num_cpus=1)
def warm_up() -> int:
    """What the first range would otherwise wait for, done once per worker
    process as the session starts: this module's imports (the engine, pyarrow's
    core and Parquet writer), the engine's compiled kernels (loaded on their
    first call) and pyarrow's first conversion from Python objects (which
    imports pandas, when it is installed).  Returns the worker's pid."""
    import os

    rows_table([])
    simulate(Scenario(guest_memory="16MiB", resched="tick"), engine="fast", cost_model=WARM_UP)
    return os.getpid()


# The warm-up's costs (any will do): given, not looked up by name, so that a worker
# whose working directory holds a ``conf/`` of its own never has to find a file.
WARM_UP = CostModel("warm-up", 1, *([1000] * len(COST_FIELDS)))
