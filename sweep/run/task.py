"""The Ray task that runs one range of the grid on a worker.

Its own module, importing only Ray, the engine, ``sweep.run.cells`` and
pyarrow's core: a worker imports the module of the function it runs, and the
driver's modules (Arrow datasets, Hydra, tqdm) would add most of a second to
every worker's start.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import ray

from .cells import RangeResult, RunSettings, run_range
from .grid import Grid


@ray.remote(num_cpus=1)
def run_range_task(
    grid: Grid,
    settings: RunSettings,
    lo: int,
    hi: int,
    done: np.ndarray | None,
    staging: str | None = None,
    metadata: dict[str, str] | None = None,
) -> tuple[RangeResult, list]:
    """The range's result; with ``staging``, its rows written there as staged
    files (returned, for the driver to rename in) instead of sent back."""
    result = run_range(grid, settings, lo, hi, done, ray.get_runtime_context().get_node_id())
    if staging is None:
        return result, []
    from pathlib import Path

    from sweep.dataset.writer import stage

    staged = stage(result.rows, Path(staging), metadata or {})
    return dataclasses.replace(result, rows=None), staged


def warm_up() -> None:
    """Import what a task needs, at a worker's start (Ray's worker_process_setup_hook)."""
    import sweep.dataset.schema  # noqa: F401  (pyarrow's core)
