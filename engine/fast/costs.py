"""Per-event costs of one scenario in integer picoseconds, as the walks charge them."""

from __future__ import annotations

import numpy as np

from ..cost_model import CostModel
from ..geometry import PTES_PER_TABLE
from ..scenario import Scenario
from .arrays import linear
from .guest import SubtreeSums


class Costs:
    def __init__(self, scenario: Scenario, cm: CostModel):
        shared = scenario.mmu_lock == "read"
        atomic = cm.atomic_write_ps if shared else 0
        # flush_on_remove: a remote TLB flush per removed table and, shared,
        # per SPTE the walk clears (tdp_mmu_zap_spte_atomic).
        flush = cm.flush_ps(scenario.running_vcpus) if scenario.flush_on_remove else 0
        writeback = scenario.ad_writeback
        self.cm = cm
        self.visit = cm.visit_ps
        self.inner_present = cm.spte_clear_ps + atomic  # a present SPTE of a removed table
        self.entry_present = self.inner_present + (flush if shared else 0)  # the walk's clear
        self.entry_nonpresent = cm.nonpresent_entry_ps + atomic
        self.accessed = cm.accessed_writeback_ps if writeback else 0
        self.dirty = cm.dirty_writeback_ps if writeback else 0
        self.table = cm.removed_table_ps + flush
        # What a Pass is built from: equal keys, equal passes.
        self.key = (
            self.visit,
            self.entry_present,
            self.entry_nonpresent,
            self.accessed,
            self.dirty,
            self.table,
            self.inner_present,
        )
        # Removing a subtree (handle_removed_pt, recursively) that holds T
        # tables and L present leaves, A accessed and D dirty: every table's
        # bookkeeping and 512 entries, of which the leaves and the T - 1
        # child tables are present.  Linear in (T, L, A, D):
        #   T*table + (L + T - 1)*present + (512*T - L - T + 1)*nonpresent + A*a + D*d
        ep, enp = self.inner_present, self.entry_nonpresent
        self.removal_weights = (
            self.table + ep + (PTES_PER_TABLE - 1) * enp,
            ep - enp,
            *self.key[3:5],
        )
        self.removal_const = enp - ep

    def removal_cost(self, sums: SubtreeSums) -> np.ndarray | int:
        """Cost of removing each subtree of ``sums`` (an int when all are alike)."""
        w_t, w_l, w_a, w_d = self.removal_weights
        terms = ((sums.tables, w_t), (sums.leaves, w_l), (sums.accessed, w_a), (sums.dirty, w_d))
        sizes = [len(x) for x, _ in terms if isinstance(x, np.ndarray)]
        if not sizes:
            return self.removal_const + sum(int(x) * w for x, w in terms)
        return linear(sizes[0], self.removal_const, *terms)

    def removal_total(self, tables: int, leaves: int, accessed: int, dirty: int, roots: int) -> int:
        """Cost of removing ``roots`` subtrees that hold these totals together."""
        w_t, w_l, w_a, w_d = self.removal_weights
        return (
            roots * self.removal_const + tables * w_t + leaves * w_l + accessed * w_a + dirty * w_d
        )
