"""The fast engine's events of one zap (``engine.events``).

Each pass runs on the Timeline through a ``PassRecorder``, which runs the
walk of the scenario's policy with a log of its yields (``tick_kernel``'s
LOG_COLUMNS): ``tick`` logs each yield as it places it; ``always`` is placed
by the same loop with a 1 ps interval and checked against the closed form
(``run_always``) it must equal; ``never`` has none.  A pass whose yields do
not fit what is left of the budget runs unlogged, and its holds are
summarized.  The longest operations are read from each pass's bottom tables
(``longest_entries``) and put on the clock by the yields before them.
"""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass

import numpy as np

from ..cost_model import CostModel
from ..events import (
    Holds,
    Operation,
    PassSpan,
    SummarizedHolds,
    ZapEvents,
    level_name,
    longest_first,
)
from ..geometry import PTES_PER_TABLE, pages_per_spte
from ..scenario import Scenario
from . import tick_kernel as K
from .always import run_always
from .bottom import Bottom, LeafBottom, SkipBottom, TableBottom
from .never import run_never
from .tick import run_tick
from .timeline import FastTimeline
from .zap import simulate_fast, walk_of
from .zap_pass import Pass

# What the logged walk of an ``always`` pass must leave as the closed form does.
TIMELINE_STATE = (
    "clock",
    "visits",
    "yields",
    "tlb_flushes",
    "max_hold_ps",
    "pending_free_peak_tables",
    "hold_start",
    "hold_tables",
    "flush_pending",
    "resched_cleared",
)


@dataclass(frozen=True)
class PassRecord:
    """One pass as it ran: its span, the log of its yields (None when they
    did not fit the budget), the longest hold that ended in it with a yield,
    and the hold left open when it ended (its start, the tables it queued)."""

    p: Pass
    span: PassSpan
    log: np.ndarray | None
    longest_hold_ps: int
    hold_start: int
    hold_tables: int


class PassRecorder:
    """A walk for ``simulate_fast``: the policy's walk, with its yields logged
    while at most ``room`` yields have been logged in all."""

    def __init__(self, room: int):
        self.room = room
        self.records: list[PassRecord] = []

    def __call__(self, p: Pass, tl: FastTimeline) -> None:
        start, yields, visits = tl.clock, tl.yields, tl.visits
        longest_before, tl.max_hold_ps = tl.max_hold_ps, 0  # this pass's own, for now
        log = self.walk(p, tl)
        span = PassSpan(
            p.zap_level,
            level_name(p.zap_level, p.root),
            start,
            tl.clock,
            tl.yields - yields,
            tl.visits - visits,
        )
        self.records.append(PassRecord(p, span, log, tl.max_hold_ps, tl.hold_start, tl.hold_tables))
        tl.max_hold_ps = max(longest_before, tl.max_hold_ps)
        if log is not None:
            self.room -= len(log)

    def walk(self, p: Pass, tl: FastTimeline) -> np.ndarray | None:
        """Run the pass; return its yields' log, or None if it did not fit."""
        walk = walk_of(tl.scenario)
        if walk is run_never:
            run_never(p, tl)
            return np.zeros((0, K.LOG_COLUMNS), dtype=np.int64)
        if walk is run_tick:
            log = np.empty((self.room, K.LOG_COLUMNS), dtype=np.int64)
            yields = tl.yields
            run_tick(p, tl, log)
            n = tl.yields - yields
            return log[:n].copy() if n <= self.room else None
        closed = copy.copy(tl)
        run_always(p, closed)
        n = closed.yields - tl.yields
        if n > self.room or p.costs.visit < 1:
            run_always(p, tl)
            return None
        log = np.empty((n, K.LOG_COLUMNS), dtype=np.int64)
        run_tick(p, tl, log, interval=1)  # every eligible check yields
        differ = [f for f in TIMELINE_STATE if getattr(tl, f) != getattr(closed, f)]
        if differ:
            raise RuntimeError(f"the logged always walk disagrees with its closed form: {differ}")
        return log


# The longest operations of a pass ----------------------------------------------------


def table_max_body(bottom: Bottom) -> np.ndarray:
    """Per bottom table, the body of its costliest entry: of the leaves it
    holds (a leaf's body is its clear and its A/D write-backs) and of the
    child tables it removes (a bottom kind not known here gets an upper
    bound, the table's whole body)."""
    c, g = bottom.costs, bottom.guest
    out = np.zeros(len(bottom.tables), dtype=np.int64)
    known = isinstance(bottom, SkipBottom)
    if isinstance(bottom, LeafBottom):
        known = True
        for count, cost in zip(bottom.held, (c.entry_present, c.accessed, c.dirty), strict=True):
            out += (np.asarray(count) > 0) * np.int64(cost)  # a dirty leaf is accessed
    if isinstance(bottom, TableBottom):
        known = True
        sub = g.subtree(bottom.level - 1, bottom.cleared)
        removal = g.per_table(bottom.level, c.entry_present + c.removal_cost(sub), np.maximum)
        out = np.maximum(out, removal)
    return out if known else bottom.table_sums().body.astype(np.int64)


@dataclass(frozen=True)
class Clearing:
    """A bottom entry that clears an SPTE: its body, its table (a position in
    the bottom's tables) and entry, the tables it frees, and the bodies of
    the entries before it in its table."""

    body: int
    b: int
    e: int
    freed: int
    before: int


def longest_entries(bottom: Bottom, keep: int) -> list[Clearing]:
    """The ``keep`` costliest clearing entries of the bottom's tables: the
    tables by their costliest entry, most first, read until no table left
    can beat the ``keep``-th best (a min-heap of body, then walk order)."""
    most = table_max_body(bottom)
    if not len(most) or not most.any():
        return []
    t = min(keep, len(most))
    top = np.argpartition(-most, t - 1)[:t] if t < len(most) else np.arange(len(most))
    top = top[np.lexsort((top, -most[top]))]
    heap: list[tuple] = []
    for b in top.tolist():
        if len(heap) == keep and most[b] < heap[0][0]:
            break
        bodies, cleared, freed = bottom.entries(b)
        before = np.cumsum(bodies) - bodies
        for e in np.flatnonzero(cleared).tolist():
            item = (int(bodies[e]), -b, -e, int(freed[e]), int(before[e]))
            if len(heap) < keep:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    return [Clearing(body, -nb, -ne, freed, before) for body, nb, ne, freed, before in heap]


def leaves_of(bottom: Bottom, entry: Clearing) -> int:
    """Leaves an entry clears: one leaf, or what the subtree it removes holds."""
    if not entry.freed:
        return 1
    g = bottom.guest
    child = int(bottom.tables[entry.b]) * PTES_PER_TABLE + entry.e
    leaves = g.subtree(bottom.level - 1, bottom.cleared).leaves
    if not isinstance(leaves, np.ndarray):
        return int(leaves)
    return int(leaves[np.searchsorted(g.exist[bottom.level - 1], child)])


def clock_at(record: PassRecord, position: int) -> int | None:
    """The clock at a pass position (pass coordinates: its own work, no
    yields): after the last yield at or before it, where the walk resumed
    plus the work since.  None when the pass's yields were not logged."""
    log = record.log
    if log is None:
        return None
    i = int(np.searchsorted(log[:, K.LOG_POSITION], position, side="right")) - 1
    if i < 0:
        return record.span.start_ps + position
    return int(log[i, K.LOG_RESUME]) + position - int(log[i, K.LOG_POSITION])


def pass_operations(record: PassRecord, index: int, keep: int) -> list[Operation]:
    p = record.p
    found = longest_entries(p.bottom, keep)
    if not found:
        return []
    pc = p.pieces(with_ops=False)
    with_bottom = np.flatnonzero(pc.bidx >= 0)  # piece of each bottom table, in order
    visit, level = p.costs.visit, p.bottom.level
    out = []
    for entry in found:
        k = int(with_bottom[entry.b])
        position = int(pc.cum_cost[k]) + pc.head * visit + entry.before + entry.e * visit
        table = int(p.bottom.tables[entry.b])
        out.append(
            Operation(
                clock_at(record, position),
                visit + entry.body,
                index,
                level,
                (table * PTES_PER_TABLE + entry.e) * pages_per_spte(level),
                leaves_of(p.bottom, entry),
                entry.freed,
            )
        )
    return out


# The events --------------------------------------------------------------------------


def holds_of(records: list[PassRecord], yield_ps: int, total_ps: int):
    """The holds of the logged passes, and the others' summarized."""
    parts, summaries = [], []
    opened = 0  # where the hold open as a pass begins started
    for i, r in enumerate(records):
        last = i == len(records) - 1
        if r.log is None:
            end = total_ps if last else r.hold_start - yield_ps
            longest = max(r.longest_hold_ps, total_ps - r.hold_start if last else 0)
            summaries.append(SummarizedHolds(i, r.span.yields + last, longest, opened, end))
        else:
            ends = r.log[:, K.LOG_HOLD_END]
            starts = np.concatenate([[opened], ends[:-1] + yield_ps])[: len(ends)]
            flags = r.log[:, K.LOG_FLAGS]
            flushed, tables = (flags & 1).astype(bool), flags >> 1
            if last:  # the zap's last hold ends with it, not with a yield
                starts, ends = np.append(starts, r.hold_start), np.append(ends, total_ps)
                flushed, tables = np.append(flushed, False), np.append(tables, r.hold_tables)
            parts.append(Holds(starts, ends, flushed, tables, np.full(len(ends), i)))
        opened = r.hold_start
    return Holds.concat(parts), tuple(summaries)


def record_fast(scenario: Scenario, cm: CostModel, max_yields: int, keep: int) -> ZapEvents:
    recorder = PassRecorder(max_yields)
    result = simulate_fast(scenario, cm, None, recorder)
    records = recorder.records
    total = records[-1].span.end_ps
    holds, summarized = holds_of(records, cm.yield_ps, total)
    ops = [op for i, r in enumerate(records) for op in pass_operations(r, i, keep)]
    if not ops:  # nothing cleared: every operation is a visit alone
        ops = [Operation(0, cm.visit_ps, 0, scenario.root_level, 0, 0, 0)]
    return ZapEvents(
        scenario=scenario,
        engine="fast",
        cost_model=cm,
        result=result,
        total_ps=total,
        passes=tuple(r.span for r in records),
        holds=holds,
        summarized=summarized,
        operations=longest_first(ops, keep),
    )


__all__ = ["PassRecorder", "record_fast"]
