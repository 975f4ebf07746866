"""Running a grid on Ray: index ranges out, batches of rows back, constant work per range.

The driver hands out ranges of the grid's combinations (``RunPlan.batch_size``
each), keeps at most ``max_in_flight`` range tasks submitted (``ray.wait``), and
places each range's rows into the dataset as soon as it completes.  Ranges go
out interleaved (``range_order``: every stretch of the grid is sampled from the
start), so the throughput seen early holds for the rest and the ETA is
meaningful, and the largest guests are not all left for the end.  The loop
polls, so progress is reported while nothing completes, and a stop request
(``stop``) is seen within a poll: the ranges in flight are abandoned, to run
again on resume.  Workers
do everything per cell: expand, validate, hash, skip what is done or a
duplicate, simulate, and build the range's Arrow table.  The driver's work per
range does not grow with its cells, so a sweep of any size costs it
O(ranges) time and O(axes + cells already done) memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import ray

from sweep.dataset import ResultWriter

from .cells import RangeCounts, RunSettings, error_table, new_cells
from .grid import Grid, GridCounts
from .progress import Progress
from .task import run_range_task

log = logging.getLogger(__name__)

AUTO_BATCH_MAX = 256
POLL_S = 0.5  # at most this long between two looks at progress and stop requests


def auto_batch_size(expected: int | None, cpus: int) -> int:
    """Large enough to amortize Ray's per-task cost, small enough to keep
    every CPU busy to the end (at least 4 batches per CPU)."""
    if not expected:
        return AUTO_BATCH_MAX
    return max(1, min(AUTO_BATCH_MAX, -(-expected // (4 * cpus))))


@dataclass(frozen=True)
class RunPlan:
    """What a sweep runs and how: the grid, the settings, what is done, the batching."""

    grid: Grid
    settings: RunSettings
    done: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    batch_size: int | None = None  # combinations per range; None = auto_batch_size
    max_in_flight: int | None = None  # None = 2 x the cluster's CPUs
    max_retries: int = 3  # re-runs of a range whose worker died
    # Where a range's rows become Parquet bytes: "worker" (the default: the
    # driver only writes them) or "driver" (workers send Arrow tables).
    encode_on: str = "worker"
    # Stop once this many cells have failed (None: never): no range is
    # handed out after, those in flight are cancelled, what arrived is kept.
    max_failures: int | None = None


@dataclass
class SweepStats:
    grid: GridCounts = field(default_factory=GridCounts)
    submitted: int = 0  # cells run (ok + failed)
    ok: int = 0
    failed: int = 0  # error rows
    resumed: int = 0  # skipped: already in the dataset
    duplicates: int = 0  # skipped: an earlier combination of the grid makes the same cell
    batches: int = 0  # ranges
    lost_batches: int = 0  # ranges whose task failed for good (rows marked error)
    first_result_s: float | None = None
    elapsed_s: float = 0.0
    abandoned_batches: int = 0  # ranges in flight when the sweep was asked to stop
    stopped: str | None = None  # why the sweep stopped before the end of the grid
    cancelled_batches: int = 0  # ranges in flight when it stopped, not run to the end

    def add(self, counts: RangeCounts) -> None:
        self.grid.add(counts.grid)
        self.ok += counts.ok
        self.failed += counts.failed
        self.submitted += counts.ok + counts.failed
        self.resumed += counts.resumed
        self.duplicates += counts.duplicates

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("grid")
        return {**self.grid.to_dict(), **out}


def lost_range(plan: RunPlan, lo: int, hi: int, err: Exception) -> tuple[RangeCounts, pa.Table]:
    """A range whose task failed for good: its cells become error rows (expanded
    here, on this rare path only)."""
    cells, counts = new_cells(plan.grid, plan.settings, lo, hi, plan.done)
    counts.failed = len(cells)
    table = error_table(cells, plan.settings, f"{type(err).__name__}: {err}")
    return counts, table


def range_order(n: int) -> Iterator[int]:
    """0..n-1 in bit-reversed order (0, n/2, n/4, 3n/4, ...): any prefix samples
    the whole grid evenly; ranges in grid order would run all small guests first."""
    bits = max(1, (n - 1).bit_length())
    for i in range(1 << bits):
        j = int(f"{i:0{bits}b}"[::-1], 2)
        if j < n:
            yield j


def run(
    plan: RunPlan,
    writer: ResultWriter,
    progress: Progress | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> SweepStats:
    """Run every new cell of ``plan`` on the connected Ray cluster into ``writer``,
    until done, until ``stop()`` is true (then the ranges in flight are left
    unfinished and counted in ``abandoned_batches``), or until
    ``plan.max_failures`` cells have failed (``stats.stopped`` says so; no range
    goes out after, those in flight are cancelled: ``cancelled_batches``)."""
    _ = plan.grid.twins  # worked out once, here, and shipped with the grid
    start = time.monotonic()  # the first submission: first_result_s counts from here
    stats = SweepStats()
    if not plan.grid.size:  # a retry with no failed cell: nothing to hand out
        return stats
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    in_flight = plan.max_in_flight or 2 * cpus
    size = plan.batch_size or auto_batch_size(plan.grid.size, cpus)
    grid, settings = ray.put(plan.grid), ray.put(plan.settings)  # once, not per range
    done = ray.put(plan.done) if len(plan.done) else None
    metadata = ray.put(writer.metadata) if plan.encode_on == "worker" else None
    task = run_range_task.options(max_retries=plan.max_retries, retry_exceptions=False)
    ranges = (k * size for k in range_order(-(-plan.grid.size // size)))
    pending: dict[ray.ObjectRef, tuple[int, int]] = {}
    poll_s = min(POLL_S, progress.log_interval_s / 2) if progress is not None else POLL_S

    def take(ref: ray.ObjectRef) -> None:
        """Place one finished range's files (or, if its task failed for good and
        no stop was asked, which could be why, its cells as error rows)."""
        lo, hi = pending.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return  # cancelled after the sweep stopped: its cells stay to run
        except (ray.exceptions.RayError, OSError) as err:
            if stop():
                stats.abandoned_batches += 1  # runs again on resume
                return
            stats.lost_batches += 1
            log.warning("range %d..%d of the grid failed for good: %s", lo, hi - 1, err)
            counts, table = lost_range(plan, lo, hi, err)
            writer.write(table)
        else:
            counts = result.counts
            if result.files:
                writer.place(result.files)
            elif result.rows is not None and result.rows.num_rows:
                writer.write(result.rows)
        stats.add(counts)
        if stats.first_result_s is None:
            stats.first_result_s = time.monotonic() - start
        if progress is not None:
            progress.advance(
                hi - lo, ok=counts.ok, failed=counts.failed, resumed=counts.resumed,
                in_flight=len(pending),
            )  # fmt: skip
        if stats.stopped is None and plan.max_failures and stats.failed >= plan.max_failures:
            cells = "cell" if stats.failed == 1 else "cells"
            stats.stopped = f"{stats.failed} {cells} failed (max_failures={plan.max_failures})"
            stats.cancelled_batches = len(pending)
            for other in pending:
                ray.cancel(other)

    while not stop():
        while (
            stats.stopped is None
            and len(pending) < in_flight
            and (lo := next(ranges, None)) is not None
        ):
            hi = min(lo + size, plan.grid.size)
            pending[task.remote(grid, settings, lo, hi, done, metadata)] = (lo, hi)
            stats.batches += 1
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
        if ready:
            take(ready[0])
        elif progress is not None:
            progress.idle(len(pending))
    if pending:  # asked to stop: keep what has finished, leave the rest for the resume
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        for ref in ready:
            take(ref)
    stats.abandoned_batches += len(pending)
    stats.elapsed_s = time.monotonic() - start
    return stats
