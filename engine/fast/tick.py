"""A pass whose need-break is raised every interval of zap time:
need_resched under ``resched=tick``, a waiter for mmu_lock every
``lock_contention_us`` when the kernel honours it (either or both; one yield
answers both), and the next check that may yield does.

The work is in placing yields: the next one is the first visit whose check
comes at or after the next multiple of the interval, if the walk made
progress (a step side) since the last yield, else the first step side after
it.
It is found by binary search on the pass's running cost over its pieces
(``Pieces``), then on the closed-form prefix cost of the bottom table's
entries where it falls; nothing else is read entry by entry.  The loop is
``tick_kernel.tick_walk``, compiled.
"""

from __future__ import annotations

import numpy as np

from . import tick_kernel as K
from .timeline import FastTimeline
from .zap_pass import Pass

_NONE = np.zeros(0, dtype=np.int64)
NO_LOG = np.zeros((0, K.LOG_COLUMNS), dtype=np.int64)


def run_tick(
    p: Pass, tl: FastTimeline, log: np.ndarray = NO_LOG, interval: int | None = None
) -> None:
    """The pass under ``tick``.  A trace passes a ``log`` (int64 rows of
    ``tick_kernel.LOG_COLUMNS``), filled with the pass's first ``len(log)``
    yields, and may set the ``interval`` in picoseconds (the scenario's by
    default; 1 ps makes every eligible check yield, as ``always`` does, when
    every visit costs at least 1 ps)."""
    flush = tl.scenario.flush_on_yield
    pc = p.pieces(with_ops=flush)  # clears are only read for the flush
    kind, arrays = p.bottom.tick_prefix()
    c = p.costs
    st = np.zeros(K.STATE_SLOTS, dtype=np.int64)
    st[K.CLOCK], st[K.CLEARED_AT], st[K.HOLD_START] = tl.clock, tl.resched_cleared, tl.hold_start
    st[K.HOLD_TABLES], st[K.PENDING] = tl.hold_tables, tl.flush_pending
    st[K.MAX_HOLD], st[K.PEAK_TABLES] = tl.max_hold_ps, tl.pending_free_peak_tables
    # 0: no second interval; a trace's own interval replaces the scenario's
    intervals = (*tl.intervals_ps, 0) if interval is None else (interval, 0)
    K.tick_walk(
        st,
        np.int64(intervals[0]),
        np.int64(intervals[1]),
        np.int64(c.visit),
        np.int64(c.entry_present),
        np.int64(c.accessed),
        np.int64(c.dirty),
        np.int64(tl.cm.yield_ps),
        np.int64(tl.flush_ps),
        bool(flush),
        np.int64(p.root),
        np.int64(pc.head),
        pc.level,
        pc.ss,
        pc.bidx.astype(np.int32, copy=False),
        pc.cum_cost,
        _NONE if pc.cum_tables is None else pc.cum_tables,
        _NONE if pc.cum_ops is None else pc.cum_ops,
        np.int64(kind),
        np.int64(p.bottom.level),
        p.bottom.n,
        p.bottom.tables,
        arrays,
        np.int64(tl.yields + pc.visits),
        log,
    )
    tl.clock, tl.resched_cleared, tl.hold_start = (int(v) for v in st[:3])
    tl.hold_tables, tl.flush_pending = int(st[K.HOLD_TABLES]), bool(st[K.PENDING])
    tl.max_hold_ps, tl.pending_free_peak_tables = int(st[K.MAX_HOLD]), int(st[K.PEAK_TABLES])
    tl.yields += int(st[K.YIELDS])
    tl.tlb_flushes += int(st[K.FLUSHES])
    tl.visits += int(st[K.VISITS]) + pc.visits
