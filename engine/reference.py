"""The reference engine: a literal model of the kernel's root zap.

It builds the page table explicitly and walks it with the same verbs as
arch/x86/kvm/mmu/tdp_iter.c (step down, step side, step up, restart), runs
the body of tdp_mmu_zap_root() on every visit, and removes child tables
recursively as handle_removed_pt() does.  Each root (the main one, and
SMM's) is zapped by its own tdp_mmu_zap_root() call: one after another on
one timeline, or by parallel workers, one timeline each.  Clarity beats
speed: this engine is the oracle the fast engine must equal.
"""

from __future__ import annotations

import numpy as np

from .cost_model import CostModel
from .geometry import PTES_PER_TABLE, pages_per_spte, round_gfn, spte_index, table_span
from .memslot import Memslot
from .population import ACCESSED, DIRTY, NONPRESENT, run_codes, run_counts, run_key, split_mask
from .result import ZapResult
from .scenario import LEVEL_BY_NAME, Scenario
from .timeline import Timeline, zap_result


class Table:
    """A page table: 512 SPTEs at ``level``.  An SPTE is NONPRESENT (0), a
    leaf code (PRESENT/ACCESSED/DIRTY) or the child Table it points to."""

    __slots__ = ("level", "sptes")

    def __init__(self, level: int, sptes: list | None = None):
        self.level = level
        self.sptes = sptes if sptes is not None else [NONPRESENT] * PTES_PER_TABLE


def slot_mappings(slot: Memslot, backing: int) -> list[tuple[int, int]]:
    """The mappings of one memslot by KVM's mapping-level rule, literally:
    every GFN of the slot is mapped at the largest level, no larger than its
    backing page, whose aligned range around it lies wholly inside the slot
    (``kvm_mmu_max_mapping_level()``; ``lpage_info.disallow_lpage`` is set
    for the huge pages that cross the slot's edges).  Returns (level, first
    GFN) per mapping, walking down from the backing level's aligned ranges."""
    start, end = slot.base_gfn, slot.base_gfn + slot.npages
    out: list[tuple[int, int]] = []

    def place(level: int, gfn: int) -> None:
        span = pages_per_spte(level)
        if gfn + span <= start or gfn >= end:
            return
        if start <= gfn and gfn + span <= end:
            out.append((level, gfn))
            return
        for i in range(PTES_PER_TABLE):  # crosses an edge: map it with smaller pages
            place(level - 1, gfn + i * pages_per_spte(level - 1))

    span = pages_per_spte(backing)
    for gfn in range(round_gfn(start, backing), end, span):
        place(backing, gfn)
    return out


def build_page_table(scenario: Scenario) -> Table:
    """The root table with every table the guest's present leaves need.

    Each slot's mappings come from the mapping-level rule; a huge mapping
    that the seed splits (split_ratio) is mapped by 4K pages instead.  The
    leaves of one slot in one table form a run, whose present, accessed and
    dirty entries come from the population draw.  A table exists when it
    holds a present leaf or a table below it does; the root always exists.
    """
    root = Table(scenario.root_level)
    seed = scenario.seed
    runs: dict[tuple[int, int, int], list[int]] = {}  # (level, table, slot) -> entries
    split: set[tuple[int, int]] = set()  # (level, entry) of split huge mappings
    for s, slot in enumerate(scenario.slots):
        backing = LEVEL_BY_NAME[slot.page_size]
        for level, gfn in slot_mappings(slot, backing):
            entry = gfn // pages_per_spte(level)
            runs.setdefault((level, entry // PTES_PER_TABLE, s), []).append(entry % PTES_PER_TABLE)
            if level > 1 and split_mask(seed, level, [entry], slot.split_ratio)[0]:
                split.add((level, entry))
                for t in range(
                    gfn // PTES_PER_TABLE, (gfn + pages_per_spte(level)) // PTES_PER_TABLE
                ):
                    runs.setdefault((1, t, s), []).extend(range(PTES_PER_TABLE))
    for (level, t, s), entries in sorted(runs.items()):
        slot = scenario.slots[s]
        lo, hi = min(entries), max(entries) + 1
        assert len(entries) == hi - lo, "a slot's leaves in one table are contiguous"
        key = int(run_key(t, s, level, LEVEL_BY_NAME[slot.page_size]))
        ratios = (slot.populated_ratio, slot.accessed_ratio, slot.dirty_ratio)
        c = run_counts(seed, np.array([key], dtype=np.uint64), np.array([hi - lo]), ratios)
        codes = run_codes(seed, key, lo, hi, (c.present[0], c.accessed[0], c.dirty[0]))
        for i, code in zip(range(lo, hi), codes.tolist(), strict=True):
            if code != NONPRESENT and (level, t * PTES_PER_TABLE + i) not in split:
                table_at(root, scenario.root_level, level, t).sptes[i] = code
    return root


def table_at(root: Table, root_level: int, level: int, index: int) -> Table:
    """Table ``index`` at ``level``, created with the tables above it if missing."""
    table = root
    gfn = index * table_span(level)
    for lv in range(root_level, level, -1):
        i = spte_index(gfn, lv)
        if not isinstance(table.sptes[i], Table):
            table.sptes[i] = Table(lv - 1)
        table = table.sptes[i]
    return table


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
    RCU read-side section that only a yield drops.  ``scenario`` is the
    root's (``Scenario.roots``), ``timeline`` the task's that zaps it."""

    def __init__(self, scenario: Scenario, cost_model: CostModel, timeline: Timeline):
        self.scenario = scenario
        self.cm = cost_model
        self.shared = scenario.mmu_lock == "read"
        self.timeline = timeline

    def run(self) -> None:
        root = build_page_table(self.scenario)
        budget = visit_budget(root, self.scenario.root_level)
        for zap_level in self.scenario.zap_level_numbers:
            self.zap_pass(root, zap_level, budget)

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
            if it.next_last_level_gfn != it.yielded_gfn and tl.need_break():
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
            leaves = self.clear_spte(spte, it.level)
            it.table.sptes[it.index] = NONPRESENT
            tl.ops += 1
            tl.flush_pending = True
            tl.end_op(leaves)
            it.next()

    def clear_spte(self, spte, level: int) -> int:
        """Clear one present SPTE at ``level``; returns the leaves it cleared."""
        tl, cm = self.timeline, self.cm
        tl.clock += cm.spte_clear_ps + (cm.atomic_write_ps if self.shared else 0)
        if self.shared and self.scenario.flush_on_remove:
            tl.inline_flush()  # tdp_mmu_zap_spte_atomic() flushes what it froze
        if isinstance(spte, Table):
            return self.remove_table(spte)
        self.zap_leaf(spte, level)
        return 1

    def zap_leaf(self, code: int, level: int) -> None:
        tl, cm = self.timeline, self.cm
        tl.leaf_zapped += 1
        tl.leaves_by_level[level] += 1
        if not self.scenario.ad_writeback:  # the struct page is left alone
            return
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
                self.zap_leaf(spte, table.level)
                leaves += 1
        if self.scenario.flush_on_remove:  # before the table can be reused
            tl.inline_flush()
        tl.table_freed()
        return leaves


def simulate_reference(scenario: Scenario, cost_model: CostModel) -> ZapResult:
    """Zap every root: serially on one timeline, or in parallel on one each."""
    timelines: list[Timeline] = []
    for root in scenario.roots:
        if timelines and scenario.root_zap == "serial":
            timelines[-1].next_root()
        else:
            timelines.append(Timeline(scenario, cost_model))
        RootZap(root, cost_model, timelines[-1]).run()
    return zap_result(timelines, len(scenario.roots))
