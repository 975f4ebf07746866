"""Running cells on Ray: batches, bounded in-flight tasks, completion order.

The driver expands the grid lazily, skips cells already in the dataset (or
already seen in this run), groups the rest into batches, keeps at most
``max_in_flight`` batch tasks submitted (``ray.wait``), and writes each
batch's rows as soon as it completes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import ray

from .cells import Cell, RunSettings, make_cell, scenario_columns
from .config import RayConfig
from .progress import Progress
from .reaper import Reaper
from .results import ResultWriter
from .schema import rows_table
from .task import _batch_task

log = logging.getLogger(__name__)


@dataclass
class SweepStats:
    submitted: int = 0  # cells sent to Ray
    ok: int = 0
    failed: int = 0  # error rows
    resumed: int = 0  # skipped: already in the dataset
    duplicates: int = 0  # skipped: same cell_id earlier in this grid
    batches: int = 0
    lost_batches: int = 0  # batches whose task failed for good (rows marked error)
    first_result_s: float | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    cells: list[Cell]
    consumed: int  # grid combinations it accounts for, skipped ones included


@dataclass
class _Batcher:
    """Turns scenarios into batches of new cells, counting what it skips."""

    settings: RunSettings
    done: frozenset[str] | set[str]
    stats: SweepStats
    size: int
    seen: set[str] = field(default_factory=set)

    def batches(self, scenarios: Iterable, dropped: Callable[[], int]) -> Iterator[Batch]:
        cells: list[Cell] = []
        skipped = 0
        for scenario in scenarios:
            cell = make_cell(scenario, self.settings)
            if cell.cell_id in self.done:
                self.stats.resumed += 1
                skipped += 1
                continue
            if cell.cell_id in self.seen:
                self.stats.duplicates += 1
                skipped += 1
                continue
            self.seen.add(cell.cell_id)
            cells.append(cell)
            if len(cells) == self.size:
                yield Batch(cells, len(cells) + skipped + dropped())
                cells, skipped = [], 0
        if cells:
            yield Batch(cells, len(cells) + skipped + dropped())


AUTO_BATCH_MAX = 256


def auto_batch_size(expected: int | None, cpus: int) -> int:
    """Large enough to amortize Ray's per-task cost, small enough to keep
    every CPU busy to the end (at least 4 batches per CPU)."""
    if not expected:
        return AUTO_BATCH_MAX
    return max(1, min(AUTO_BATCH_MAX, -(-expected // (4 * cpus))))


def error_table(cells: list[Cell], settings: RunSettings, message: str) -> pa.Table:
    """Rows for cells whose batch could not be run at all (worker lost for good)."""
    rows = [
        {
            "cell_id": c.cell_id,
            **scenario_columns(c.scenario),
            "engine": settings.engine,
            "cost_model": settings.cost_model.name,
            "engine_version": settings.engine_version,
            "status": "error",
            "error": message,
        }
        for c in cells
    ]
    return rows_table(rows)


def run_cells(
    scenarios: Iterable,
    settings: RunSettings,
    writer: ResultWriter,
    *,
    done: frozenset[str] | set[str] = frozenset(),
    batch_size: int | None = None,
    max_in_flight: int | None = None,
    expected: int | None = None,
    max_retries: int = 3,
    progress: Progress | None = None,
    dropped: Callable[[], int] = lambda: 0,
) -> SweepStats:
    """Run every new cell of ``scenarios`` on the connected Ray cluster.

    ``dropped()`` returns how many combinations expansion dropped since the
    last call (so progress accounts for them); ``done`` holds ids to skip.
    ``batch_size=None`` picks one from ``expected`` (the number of
    combinations): at most AUTO_BATCH_MAX, and at least 4 batches per CPU.
    """
    start = time.monotonic()
    stats = SweepStats()
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    if max_in_flight is None:
        max_in_flight = 2 * cpus
    if batch_size is None:
        batch_size = auto_batch_size(expected, cpus)
    settings_ref = ray.put(settings)
    task = _batch_task.options(max_retries=max_retries, retry_exceptions=False)
    batches = _Batcher(settings, done, stats, batch_size).batches(scenarios, dropped)
    pending: dict[ray.ObjectRef, Batch] = {}
    exhausted = False
    while True:
        while not exhausted and len(pending) < max_in_flight:
            batch = next(batches, None)
            if batch is None:
                exhausted = True
                break
            pending[task.remote(batch.cells, settings_ref)] = batch
            stats.submitted += len(batch.cells)
            stats.batches += 1
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            batch = pending.pop(ref)
            try:
                table = rows_table(ray.get(ref))
            except (ray.exceptions.RayError, OSError) as err:
                stats.lost_batches += 1
                log.warning("batch of %d cells failed for good: %s", len(batch.cells), err)
                table = error_table(batch.cells, settings, f"{type(err).__name__}: {err}")
            writer.write(table)
            failed = table["status"].to_pylist().count("error")
            stats.ok += table.num_rows - failed
            stats.failed += failed
            if stats.first_result_s is None:
                stats.first_result_s = time.monotonic() - start
            if progress is not None:
                progress.advance(batch.consumed, ok=table.num_rows - failed, failed=failed)
    if progress is not None:
        progress.advance(dropped())
    stats.elapsed_s = time.monotonic() - start
    return stats


def runtime_env() -> dict:
    """Ship this code to a cluster's workers: the engine, the pipeline, the conf."""
    import conf
    import engine
    import sweep

    return {"py_modules": [engine, sweep, conf]}


# Ray resolves 127.0.0.1 to the host's address and binds its gRPC servers to
# every interface, except where "clusters are not supported" (Windows, macOS):
# there it keeps the node on loopback.  That switch is read from the
# environment by Ray's child processes and was read by the driver when it
# imported ray, so both are set.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_local_ray(num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Start an embedded Ray on loopback only, without the dashboard's web UI."""
    from ray._private import ray_constants

    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            address="local",  # never join a cluster started elsewhere on this host
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            include_dashboard=False,
            log_to_driver=False,
        )
    finally:
        os.environ.pop(_LOOPBACK_ENV, None)
        ray_constants.ENABLE_RAY_CLUSTER = True


@contextmanager
def ray_session(cfg: RayConfig):
    """Connect to the cluster named by ``cfg.address``/``RAY_ADDRESS``, or start
    an embedded local Ray on loopback with no dashboard; shut down after."""
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():  # the caller owns this session (tests, notebooks)
        yield
        return
    reaper = None
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env(), log_to_driver=False)
    else:
        reaper = Reaper()  # if this driver is killed, its local Ray goes too
        init_local_ray(cfg.num_cpus, cfg.object_store_memory)
    try:
        resources = ray.cluster_resources()
        log.info("Ray: %d node(s), %s CPUs", len(ray.nodes()), resources.get("CPU"))
        yield
    finally:
        ray.shutdown()
        if reaper is not None:
            reaper.close()
