"""The zap's timeline: an exact picosecond clock, the scheduler's view of it,
operations, RCU holds, yields and TLB flushes.

Both engines drive one of these, so "when does a yield happen" and "what is
an operation, an RCU hold" have a single definition.  A task that zaps
several roots one after another runs them on one timeline (``next_root``);
parallel workers have one each, and ``zap_result`` reads them together.
"""

from __future__ import annotations

from .cost_model import CostModel
from .geometry import TABLE_BYTES
from .result import ZapResult
from .scenario import Scenario


class Timeline:
    def __init__(self, scenario: Scenario, cost_model: CostModel):
        self.scenario = scenario
        self.cm = cost_model
        self.flush_ps = cost_model.flush_ps(scenario.running_vcpus)
        # need_resched (tick) and a waiter for mmu_lock are raised every
        # interval of zap time; both are answered, and cleared, by a yield.
        self.intervals_ps = scenario.need_break_intervals_ps
        self.clock = 0  # ps since the zap took RCU and mmu_lock
        self.resched_cleared = 0  # clock when need_resched was last cleared
        self.op_start = 0
        self.hold_start = 0
        self.hold_tables = 0
        self.flush_pending = False
        # Counts reported in ZapResult.
        self.visits = 0
        self.yields = 0
        self.ops = 0
        self.leaf_zapped = 0
        self.leaves_by_level = [0, 0, 0, 0]  # present leaves cleared at levels 1 (4K) to 3 (1G)
        self.tables_freed = 0
        self.removed_entries_scanned = 0
        self.accessed_writebacks = 0
        self.dirty_writebacks = 0
        self.tlb_flushes = 0
        self.max_op_leaves = 0
        self.max_op_ps = 0
        self.max_hold_ps = 0
        self.pending_free_peak_tables = 0

    def begin_visit(self) -> None:
        """One loop-body execution starts: the iterator step and the yield
        check are charged as one visit; an operation runs from here to the
        end of the body."""
        self.visits += 1
        self.op_start = self.clock
        self.clock += self.cm.visit_ps

    def need_break(self) -> bool:
        """need_resched() || rwlock_needbreak(): 'always', or raised at every
        multiple of an interval of zap time (resched_interval under 'tick',
        lock_contention when honoured) and cleared by a yield."""
        if self.scenario.resched == "always":
            return True
        cleared = self.resched_cleared
        return any(self.clock // i > cleared // i for i in self.intervals_ps)

    def end_op(self, leaves: int) -> None:
        self.max_op_ps = max(self.max_op_ps, self.clock - self.op_start)
        self.max_op_leaves = max(self.max_op_leaves, leaves)

    def inline_flush(self) -> None:
        """A remote TLB flush inside an operation (flush_on_remove); it does
        not answer a flush pending for the next yield."""
        self.clock += self.flush_ps
        self.tlb_flushes += 1

    def next_root(self) -> None:
        """The next root, in the same task: its own RCU read-side section,
        taken right after the last one was dropped, with no yield between."""
        self.end_hold()
        self.hold_start = self.clock

    def table_freed(self) -> None:
        self.tables_freed += 1
        self.hold_tables += 1
        self.clock += self.cm.removed_table_ps

    def end_hold(self) -> None:
        self.max_hold_ps = max(self.max_hold_ps, self.clock - self.hold_start)
        self.pending_free_peak_tables = max(self.pending_free_peak_tables, self.hold_tables)
        self.hold_tables = 0

    def yield_cpu(self) -> None:
        """Flush if a flush is pending (flush_on_yield), drop RCU and
        mmu_lock, reschedule, re-take them.  The yielding visit is an
        operation of its own (the check only)."""
        self.end_op(0)
        self.flush_and_yield()

    def flush_and_yield(self) -> None:
        """The flush (if one is pending and flush_on_yield), the end of the
        RCU hold, and the yield, after which need_resched is clear."""
        if self.scenario.flush_on_yield and self.flush_pending:
            self.clock += self.flush_ps
            self.tlb_flushes += 1
            self.flush_pending = False
        self.end_hold()
        self.clock += self.cm.yield_ps
        self.yields += 1
        self.hold_start = self.clock
        self.resched_cleared = self.clock


SUMMED = (
    "visits",
    "yields",
    "ops",
    "leaf_zapped",
    "tables_freed",
    "removed_entries_scanned",
    "accessed_writebacks",
    "dirty_writebacks",
    "tlb_flushes",
)


def zap_result(timelines: list[Timeline], roots: int) -> ZapResult:
    """The result of a zap of ``roots`` roots run on ``timelines``: one for a
    serial zap, one per root for parallel workers.  Counts and CPU time
    (``total_ns``) are summed, maxima taken; ``wall_ns`` is the longest
    timeline, the task's own when serial, the slowest worker's when parallel."""
    for tl in timelines:
        tl.end_hold()
    sums = {name: sum(getattr(tl, name) for tl in timelines) for name in SUMMED}
    max_hold = max(tl.max_hold_ps for tl in timelines)
    scenario = timelines[0].scenario
    return ZapResult(
        **{k: v for k, v in sums.items() if k != "ops"},
        max_op_leaves=max(tl.max_op_leaves for tl in timelines),
        max_op_ns=max(tl.max_op_ps for tl in timelines) // 1000,
        max_rcu_hold_ns=max_hold // 1000,
        total_ns=sum(tl.clock for tl in timelines) // 1000,
        rcu_stall=max_hold >= scenario.rcu_stall_timeout_ps,
        pending_free_peak_bytes=max(tl.pending_free_peak_tables for tl in timelines) * TABLE_BYTES,
        ops=sums["ops"],
        leaves_4k=sum(tl.leaves_by_level[1] for tl in timelines),
        leaves_2m=sum(tl.leaves_by_level[2] for tl in timelines),
        leaves_1g=sum(tl.leaves_by_level[3] for tl in timelines),
        roots_zapped=roots,
        wall_ns=max(tl.clock for tl in timelines) // 1000,
    )
