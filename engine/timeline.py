"""The zap's timeline: an exact picosecond clock, the scheduler's view of it,
operations, RCU holds, yields and TLB flushes.

Both engines drive one of these, so "when does a yield happen" and "what is
an operation, an RCU hold" have a single definition.
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
        self.flush_ps = cost_model.flush_ps(scenario.vcpus)
        self.interval_ps = scenario.resched_interval_ps
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

    def need_resched(self) -> bool:
        """need_resched(): 'always', 'never', or raised at every multiple of
        resched_interval of zap time and cleared by a yield."""
        policy = self.scenario.resched
        if policy == "always":
            return True
        if policy == "never":
            return False
        return self.clock // self.interval_ps > self.resched_cleared // self.interval_ps

    def end_op(self, leaves: int) -> None:
        self.max_op_ps = max(self.max_op_ps, self.clock - self.op_start)
        self.max_op_leaves = max(self.max_op_leaves, leaves)

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

    def result(self) -> ZapResult:
        self.end_hold()
        return ZapResult(
            visits=self.visits,
            yields=self.yields,
            leaf_zapped=self.leaf_zapped,
            tables_freed=self.tables_freed,
            removed_entries_scanned=self.removed_entries_scanned,
            accessed_writebacks=self.accessed_writebacks,
            dirty_writebacks=self.dirty_writebacks,
            tlb_flushes=self.tlb_flushes,
            max_op_leaves=self.max_op_leaves,
            max_op_ns=self.max_op_ps // 1000,
            max_rcu_hold_ns=self.max_hold_ps // 1000,
            total_ns=self.clock // 1000,
            rcu_stall=self.max_hold_ps >= self.scenario.rcu_stall_timeout_ps,
            pending_free_peak_bytes=self.pending_free_peak_tables * TABLE_BYTES,
            ops=self.ops,
            leaves_4k=self.leaves_by_level[1],
            leaves_2m=self.leaves_by_level[2],
            leaves_1g=self.leaves_by_level[3],
        )
