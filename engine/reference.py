"""The reference engine: a literal model of the kernel's root zap.

It builds the page table explicitly and walks it with the same verbs as
arch/x86/kvm/mmu/tdp_iter.c (step down, step side, step up, restart), runs
the body of tdp_mmu_zap_root() on every visit, and removes child tables
recursively as handle_removed_pt() does.  Clarity beats speed: this engine is
the oracle the fast engine must equal.
"""

from __future__ import annotations

from .cost_model import CostModel
from .geometry import PTES_PER_TABLE, pages_per_spte, round_gfn, spte_index
from .population import ACCESSED, DIRTY, NONPRESENT, leaf_table_counts, leaf_table_entries
from .result import ZapResult
from .scenario import Scenario
from .timeline import Timeline


class Table:
    """A page table: 512 SPTEs at ``level``.  An SPTE is NONPRESENT (0), a
    leaf code (PRESENT/ACCESSED/DIRTY) or the child Table it points to."""

    __slots__ = ("level", "sptes")

    def __init__(self, level: int, sptes: list | None = None):
        self.level = level
        self.sptes = sptes if sptes is not None else [NONPRESENT] * PTES_PER_TABLE


def build_page_table(scenario: Scenario) -> Table:
    """The root table with every table the guest's present leaves need.

    A leaf table exists when it holds at least one present leaf; an upper
    table exists when something below it does; the root always exists.
    """
    root = Table(scenario.root_level)
    leaf_level = scenario.leaf_level
    counts = leaf_table_counts(scenario)
    for t in range(len(counts.present)):
        if counts.present[t] == 0:
            continue
        leaf_table = Table(leaf_level, leaf_table_entries(scenario, t, counts, t).tolist())
        gfn = t * pages_per_spte(leaf_level + 1)
        table = root
        for level in range(scenario.root_level, leaf_level + 1, -1):
            i = spte_index(gfn, level)
            if table.sptes[i] == NONPRESENT:
                table.sptes[i] = Table(level - 1)
            table = table.sptes[i]
        table.sptes[spte_index(gfn, leaf_level + 1)] = leaf_table
    return root


class TdpIter:
    """struct tdp_iter: a pre-order walk over SPTEs at levels >= min_level."""

    def __init__(self, root: Table, root_level: int, min_level: int, start_gfn: int):
        # tdp_iter_start()
        self.pt_path: list[Table | None] = [None] * (root_level + 1)
        self.pt_path[root_level] = root
        self.root_level = root_level
        self.min_level = min_level
        self.next_last_level_gfn = start_gfn
        self.restart()

    def restart(self) -> None:
        """tdp_iter_restart(): walk down again from the root toward
        next_last_level_gfn; no yield until a step side moves on."""
        self.yielded = False
        self.yielded_gfn = self.next_last_level_gfn
        self.level = self.root_level
        self.gfn = round_gfn(self.next_last_level_gfn, self.level)
        self.valid = True

    @property
    def table(self) -> Table:
        return self.pt_path[self.level]

    @property
    def index(self) -> int:
        return spte_index(self.gfn, self.level)

    @property
    def spte(self):
        return self.table.sptes[self.index]

    def step_down(self) -> bool:
        if self.level == self.min_level:
            return False
        # Re-read the SPTE: a zapped entry is not descended into.
        child = self.spte
        if not isinstance(child, Table):
            return False
        self.level -= 1
        self.pt_path[self.level] = child
        self.gfn = round_gfn(self.next_last_level_gfn, self.level)
        return True

    def step_side(self) -> bool:
        if self.index == PTES_PER_TABLE - 1:
            return False
        self.gfn += pages_per_spte(self.level)
        self.next_last_level_gfn = self.gfn
        return True

    def step_up(self) -> bool:
        if self.level == self.root_level:
            return False
        self.level += 1
        self.gfn = round_gfn(self.gfn, self.level)
        return True

    def next(self) -> None:
        """tdp_iter_next()."""
        if self.yielded:
            self.restart()
            return
        if self.step_down():
            return
        while True:
            if self.step_side():
                return
            if not self.step_up():
                break
        self.valid = False


class WalkError(RuntimeError):
    """A pass walked more than the table allows: a walk that would not end."""


def visit_budget(root: Table, root_level: int) -> int:
    """The most visits one pass can make: every entry of every table, and
    for each, a yield's aborted visit and a restart's walk back down from the
    root (at most root_level visits)."""
    tables, stack = 0, [root]
    while stack:
        table = stack.pop()
        tables += 1
        stack.extend(spte for spte in table.sptes if isinstance(spte, Table))
    return tables * PTES_PER_TABLE * (root_level + 2)


class RootZap:
    """tdp_mmu_zap_root(): the passes of one strategy, back to back under one
    RCU read-side section that only a yield drops."""

    def __init__(self, scenario: Scenario, cost_model: CostModel):
        self.scenario = scenario
        self.cm = cost_model
        self.shared = scenario.mmu_lock == "read"
        self.timeline = Timeline(scenario, cost_model)

    def run(self) -> ZapResult:
        root = build_page_table(self.scenario)
        budget = visit_budget(root, self.scenario.root_level)
        for zap_level in self.scenario.zap_level_numbers:
            self.zap_pass(root, zap_level, budget)
        return self.timeline.result()

    def zap_pass(self, root: Table, zap_level: int, budget: int) -> None:
        tl = self.timeline
        # The walk's iterator, kept where an observer (engine.recording) can read it.
        self.iter = it = TdpIter(root, self.scenario.root_level, zap_level, 0)
        end = self.scenario.end_gfn
        visits = 0
        while it.valid and it.gfn < end:
            visits += 1
            if visits > budget:
                raise WalkError(
                    f"pass at zap level {zap_level} made {visits} visits, more than any "
                    f"walk of this table can ({budget}): the walk does not end"
                )
            tl.begin_visit()
            # tdp_mmu_iter_cond_resched(): yield only after forward progress.
            if it.next_last_level_gfn != it.yielded_gfn and tl.need_resched():
                tl.yield_cpu()
                it.yielded = True
                it.next()
                continue
            spte = it.spte
            if spte == NONPRESENT or it.level > zap_level:
                tl.end_op(0)
                it.next()
                continue
            # One operation: clear the SPTE; nothing in here can yield.
            leaves = self.clear_spte(spte)
            it.table.sptes[it.index] = NONPRESENT
            tl.ops += 1
            tl.flush_pending = True
            tl.end_op(leaves)
            it.next()

    def clear_spte(self, spte) -> int:
        """Clear one present SPTE; returns the leaves it cleared."""
        tl, cm = self.timeline, self.cm
        tl.clock += cm.spte_clear_ps + (cm.atomic_write_ps if self.shared else 0)
        if isinstance(spte, Table):
            return self.remove_table(spte)
        self.zap_leaf(spte)
        return 1

    def zap_leaf(self, code: int) -> None:
        tl, cm = self.timeline, self.cm
        tl.leaf_zapped += 1
        if code & ACCESSED == ACCESSED:
            tl.accessed_writebacks += 1
            tl.clock += cm.accessed_writeback_ps
        if code == DIRTY:
            tl.dirty_writebacks += 1
            tl.clock += cm.dirty_writeback_ps

    def remove_table(self, table: Table) -> int:
        """handle_removed_pt(): process each of the 512 entries, recursing
        into child tables, then queue the table for freeing (call_rcu)."""
        tl, cm = self.timeline, self.cm
        leaves = 0
        for spte in table.sptes:
            tl.removed_entries_scanned += 1
            if self.shared:  # every entry is frozen with an atomic xchg
                tl.clock += cm.atomic_write_ps
            if spte == NONPRESENT:
                tl.clock += cm.nonpresent_entry_ps
                continue
            tl.clock += cm.spte_clear_ps
            if isinstance(spte, Table):
                leaves += self.remove_table(spte)
            else:
                self.zap_leaf(spte)
                leaves += 1
        tl.table_freed()
        return leaves


def simulate_reference(scenario: Scenario, cost_model: CostModel) -> ZapResult:
    return RootZap(scenario, cost_model).run()
