"""The Ray task that runs a batch of cells on a worker.

Its own module, importing only Ray, the engine and ``sweep.cells``: a worker
imports the module of the function it runs, and the driver's modules (Arrow
datasets, Hydra, tqdm) would add most of a second to every worker's start.
"""

from __future__ import annotations

from typing import Any

import ray

from .cells import Cell, RunSettings, run_batch


@ray.remote(num_cpus=1)
def _batch_task(cells: list[Cell], settings: RunSettings) -> list[dict[str, Any]]:
    return run_batch(cells, settings, worker=ray.get_runtime_context().get_node_id())
