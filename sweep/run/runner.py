"""Running a grid on Ray: index ranges out, batches of rows back, constant work per range.

The driver hands out ranges of the grid's combinations (``RangePlanner``:
where, and how many, about two seconds of a worker's time each unless
``RunPlan.batch_size`` fixes it), keeps at most ``max_in_flight`` range tasks
submitted (``ray.wait``), and places each range's rows into the dataset as
soon as it completes.  Ranges go out interleaved (every stretch of the grid is
sampled from the start), so the throughput seen early holds for the rest and
the ETA is meaningful, and the largest guests are not all left for the end.  The loop
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import ray

from sweep.dataset import ResultWriter

from .cells import RangeCounts, RunSettings, error_table, new_cells
from .grid import Grid, GridCounts
from .progress import Progress
from .ranges import RangePlanner
from .task import run_range_task

log = logging.getLogger(__name__)

POLL_S = 0.5  # at most this long between two looks at progress and stop requests


@dataclass(frozen=True)
class RunPlan:
    """What a sweep runs and how: the grid, the settings, what is done, the batching."""

    grid: Grid
    settings: RunSettings
    done: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    batch_size: int | None = None  # combinations per range; None: sized by time (RangePlanner)
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
    worker_s: float = 0.0  # the workers' time on the ranges that completed
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
        self.worker_s += counts.seconds

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
    # Worked out once and shipped with the grid: by prepare(), as a rule, before
    # Ray starts (here, an allocation-heavy first 20 to 130 ms: bench/driver.py)
    _ = plan.grid.twins
    if not plan.grid.size:  # a retry with no failed cell: nothing to hand out
        return SweepStats()
    return RangeLoop(plan, writer, progress, stop).run()


class RangeLoop:
    """The driver's loop: ranges out while fewer than ``in_flight`` are, one
    finished range in per poll, progress at every poll."""

    def __init__(self, plan: RunPlan, writer: ResultWriter, progress, stop) -> None:
        self.plan, self.writer, self.progress, self.stop = plan, writer, progress, stop
        self.start = time.monotonic()  # the first submission: first_result_s counts from here
        self.stats = SweepStats()
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.in_flight = plan.max_in_flight or 2 * self.cpus
        self.planner = RangePlanner(plan.grid.size, self.cpus, plan.batch_size)
        # The task's arguments but the range, put once, not per range
        self.grid, self.settings = ray.put(plan.grid), ray.put(plan.settings)
        self.done = ray.put(plan.done) if len(plan.done) else None
        self.metadata = ray.put(writer.metadata) if plan.encode_on == "worker" else None
        self.task = run_range_task.options(max_retries=plan.max_retries, retry_exceptions=False)
        self.pending: dict[ray.ObjectRef, tuple[int, int]] = {}
        self.poll_s = min(POLL_S, progress.log_interval_s / 2) if progress else POLL_S

    def run(self) -> SweepStats:
        while not self.stop():
            self.submit()
            if not self.pending:
                break
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=self.poll_s)
            if ready:
                self.take(ready[0])
            elif self.progress is not None:
                self.progress.idle(len(self.pending))
        if self.pending:  # asked to stop: keep what has finished, leave the rest for the resume
            ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
            for ref in ready:
                self.take(ref)
        self.stats.abandoned_batches += len(self.pending)
        self.stats.elapsed_s = time.monotonic() - self.start
        return self.stats

    def submit(self) -> None:
        """Hand out ranges until ``in_flight`` are out (none once stopped).  Until
        one has come back, one per CPU: a probe whose time sizes the next
        ranges; a second probe queued behind it would only be one more range."""
        limit = self.in_flight if self.stats.first_result_s is not None else self.cpus
        while self.stats.stopped is None and len(self.pending) < limit:
            span = self.planner.next_range()
            if span is None:
                return
            lo, hi = span
            ref = self.task.remote(self.grid, self.settings, lo, hi, self.done, self.metadata)
            self.pending[ref] = span
            self.stats.batches += 1

    def take(self, ref: ray.ObjectRef) -> None:
        """Place one finished range's files (or, if its task failed for good and
        no stop was asked, which could be why, its cells as error rows)."""
        lo, hi = self.pending.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return  # cancelled after the sweep stopped: its cells stay to run
        except (ray.exceptions.RayError, OSError) as err:
            if self.stop():
                self.stats.abandoned_batches += 1  # runs again on resume
                return
            self.stats.lost_batches += 1
            log.warning("range %d..%d of the grid failed for good: %s", lo, hi - 1, err)
            counts, table = lost_range(self.plan, lo, hi, err)
            self.writer.write(table)
        else:
            counts = result.counts
            self.planner.completed(hi - lo, counts.seconds)
            if result.files:
                self.writer.place(result.files)
            elif result.rows is not None and result.rows.num_rows:
                self.writer.write(result.rows)
        self.stats.add(counts)
        if self.stats.first_result_s is None:
            self.stats.first_result_s = time.monotonic() - self.start
        if self.progress is not None:
            self.progress.advance(
                hi - lo, ok=counts.ok, failed=counts.failed, resumed=counts.resumed,
                in_flight=len(self.pending),
            )  # fmt: skip
        self.check_failures()

    def check_failures(self) -> None:
        """At ``max_failures`` failed cells: stop handing out, cancel what is out."""
        limit = self.plan.max_failures
        if self.stats.stopped is None and limit and self.stats.failed >= limit:
            cells = "cell" if self.stats.failed == 1 else "cells"
            self.stats.stopped = f"{self.stats.failed} {cells} failed (max_failures={limit})"
            self.stats.cancelled_batches = len(self.pending)
            for other in self.pending:
                ray.cancel(other)
