"""What a pass does to the entries of its bottom tables.

A pass at zap level Z walks every table at levels >= its bottom level B (Z,
or the leaf level when Z is below it).  Entries above B only step down or
side; the entries of the bottom tables are where the work is, and what they
are depends on the pass:

- :class:`SkipBottom`: leaves above the zap level (a 4K pass over 2M pages):
  visited, never cleared.
- :class:`LeafBottom`: leaves at the zap level: each present one is cleared,
  with its A/D write-back.
- :class:`TableBottom`: SPTEs pointing to child tables: each present one is
  cleared, which removes its subtree (handle_removed_pt, recursively).

Each answers, without reading entries: the pass's totals, its costliest
entry, and the maxima the ``always`` walk needs; and, for ``tick``, the
per-table sums, and what the compiled walk needs to find the prefix cost
of any table's first j entries in closed form.  ``entries`` reads one
table entry by entry.  A table whose entries mix leaves and child
tables (memslot edges, mixed page sizes) is a bottom of its own that
combines the last two.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..geometry import PTES_PER_TABLE
from ..population import (
    ACCESSED,
    DIRTY,
    NONPRESENT,
    codes_from_ranks,
    leaf_entry_ranks,
    rank_counts,
    rank_map_stream_key,
)
from . import tick_kernel
from .arrays import linear, running
from .costs import Costs
from .guest import Guest

ENTRIES = PTES_PER_TABLE


class Totals(NamedTuple):
    """What a pass clears, over all its bottom tables."""

    ops: int  # SPTEs cleared by the walk, one operation each
    leaf_zapped: int
    accessed: int
    dirty: int
    tables: int  # tables removed
    body_ps: int  # the loop bodies' work, visits excluded


class Entry(NamedTuple):
    """One visited bottom entry: its body's cost, whether it cleared an SPTE,
    and the tables that freed."""

    body: int
    cleared: bool
    freed: int


class Extremes(NamedTuple):
    """Maxima over a set of bottom entries: of body + flush if cleared, and
    of tables freed.  ``body`` is None for an empty set."""

    body: int | None
    freed: int


class TableSums(NamedTuple):
    """Per bottom table: body cost (visits excluded), clears, tables freed."""

    body: np.ndarray
    ops: np.ndarray
    freed: np.ndarray


_NO_COUNTS = np.zeros(0, dtype=np.int16)
_NO_INDEX = np.zeros(0, dtype=np.int64)
_NO_KEY = np.uint64(0)
_NO_RANKS = np.zeros((1, 1, 1), dtype=np.int16)
_NO_SUMS = np.zeros((0, 3, ENTRIES + 1), dtype=np.int64)


def _prefix_arrays(
    counts=(_NO_COUNTS, _NO_COUNTS, _NO_COUNTS),
    order_key=_NO_KEY,
    rank_table=_NO_RANKS,
    partial_b=_NO_INDEX,
    partial_sums=_NO_SUMS,
    child_lo=_NO_INDEX,
    below=_NO_INDEX,
    child_cost=_NO_INDEX,
    child_tables=_NO_INDEX,
    child_cost_each=0,
    child_tables_each=0,
) -> tuple:
    """The tick kernel's bottom arrays, typed alike for every kind (one
    compiled signature)."""
    return (
        *counts,
        np.uint64(order_key),
        rank_table,
        partial_b,
        partial_sums,
        child_lo,
        below,
        child_cost,
        child_tables,
        np.int64(child_cost_each),
        np.int64(child_tables_each),
    )


class Bottom:
    """The bottom tables of one pass: ``tables`` (sorted indices at
    ``level``) and ``n``, the entries visited in each."""

    def __init__(self, guest: Guest, costs: Costs, level: int, cleared: int | None):
        self.guest, self.costs, self.level, self.cleared = guest, costs, level, cleared
        self.tables = guest.exist[level]
        self.n = guest.visited(level)
        self.visited = guest.visited_total(level)

    # Without reading entries -----------------------------------------

    def totals(self) -> Totals:
        raise NotImplementedError

    def max_body(self) -> int:
        """The costliest single entry's body (0 when none clears anything)."""
        raise NotImplementedError

    def max_leaves(self) -> int:
        """The most leaves one entry clears."""
        raise NotImplementedError

    def extremes(self, flush: int, drop_last: bool) -> Extremes:
        """Maxima over every visited entry, but the last one of the last
        table when ``drop_last``; ``flush`` is added to the body of an entry
        that clears."""
        raise NotImplementedError

    # Reading entries -------------------------------------------------

    def entries(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per visited entry of bottom table ``b`` (a position in ``tables``):
        (body ps, cleared, tables freed)."""
        raise NotImplementedError

    def entry(self, b: int, e: int) -> Entry:
        body, cleared, freed = self.entries(b)
        return Entry(int(body[e]), bool(cleared[e]), int(freed[e]))

    # For tick: per-table sums and closed-form prefixes ---------------

    def table_sums(self) -> TableSums:
        raise NotImplementedError

    def full(self, b: np.ndarray) -> np.ndarray:
        """Which bottom tables ``b`` have all 512 entries visited."""
        return self.n[b] == ENTRIES

    def tick_prefix(self) -> tuple[int, tuple]:
        """How the tick kernel finds the prefix costs of a bottom table's
        entries: its kind and arrays (tick_kernel._prefix)."""
        return tick_kernel.SKIP, _prefix_arrays()


class SkipBottom(Bottom):
    """Leaves above the zap level: visited, skipped."""

    def totals(self) -> Totals:
        return Totals(0, 0, 0, 0, 0, 0)

    def max_body(self) -> int:
        return 0

    def max_leaves(self) -> int:
        return 0

    def extremes(self, flush: int, drop_last: bool) -> Extremes:
        return Extremes(0 if self.visited > drop_last else None, 0)

    def entries(self, b: int):
        zero = np.zeros(int(self.n[b]), dtype=np.int64)
        return zero, zero.astype(bool), zero

    def table_sums(self) -> TableSums:
        zero = np.zeros(len(self.tables), dtype=np.int16)
        return TableSums(zero, zero, zero)


class LeafBottom(Bottom):
    """Leaves at the zap level: the leaf tables, cleared entry by entry."""

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.guest.subtree(self.level, None)
        return s.leaves, s.accessed, s.dirty

    def totals(self) -> Totals:
        c = self.costs
        leaves, accessed, dirty, _ = self.guest.subtree_totals(self.level, None)
        body = leaves * c.entry_present + accessed * c.accessed + dirty * c.dirty
        return Totals(leaves, leaves, accessed, dirty, 0, body)

    def _best_leaf(self, any_present: bool, any_accessed: bool, any_dirty: bool) -> int:
        """The costliest leaf of tables with these counts (costs are >= 0, and
        a dirty leaf is accessed)."""
        c = self.costs
        if not any_present:
            return 0
        return c.entry_present + c.accessed * any_accessed + c.dirty * any_dirty

    def max_body(self) -> int:
        return self._best_leaf(*self.guest.leaf_counts_any(drop_last=False))

    def max_leaves(self) -> int:
        return int(self.guest.leaf_counts_any(drop_last=False)[0])

    def extremes(self, flush: int, drop_last: bool) -> Extremes:
        if self.visited <= drop_last:
            return Extremes(None, 0)
        any_p, any_a, any_d = self.guest.leaf_counts_any(drop_last)
        best = self._best_leaf(any_p, any_a, any_d) + (flush if any_p else 0)
        if drop_last:
            # The last table's entries but its last one, read one by one.
            body, cleared, _ = self.entries(len(self.tables) - 1)
            if len(body) > 1:
                best = max(best, int((body[:-1] + flush * cleared[:-1]).max()))
        return Extremes(best, 0)

    def entries(self, b: int):
        n, c, cnt = int(self.n[b]), self.costs, self.guest.counts
        table = int(self.tables[b])
        guest_entries = int(cnt.entries[table])
        m = min(n, guest_entries)
        codes = np.zeros(n, dtype=np.uint8)
        ranks = leaf_entry_ranks(self.guest.scenario.seed, table, guest_entries, np.arange(m))
        codes[:m] = codes_from_ranks(
            ranks, int(cnt.present[table]), int(cnt.accessed[table]), int(cnt.dirty[table])
        )
        present = codes != NONPRESENT
        body = (
            present * c.entry_present
            + ((codes & ACCESSED) == ACCESSED) * c.accessed
            + (codes == DIRTY) * c.dirty
        ).astype(np.int64)
        return body, present, np.zeros(n, dtype=np.int64)

    def table_sums(self) -> TableSums:
        c = self.costs
        present, accessed, dirty = self._counts()
        body = linear(
            len(present), 0, (present, c.entry_present), (accessed, c.accessed), (dirty, c.dirty)
        )
        return TableSums(body, present, np.zeros(len(present), dtype=np.int16))

    def full(self, b: np.ndarray) -> np.ndarray:
        # 512 visited entries, and 512 guest entries (not the guest's last, partial table).
        return super().full(b) & (self.guest.counts.entries[self.tables[b]] == ENTRIES)

    def tick_prefix(self) -> tuple[int, tuple]:
        # Tables without 512 guest entries, or cut short by the end of the
        # walk, get their running sums in full; there are one or two.
        cnt, nb = self.guest.counts, len(self.tables)
        maybe = np.union1d(np.flatnonzero(self.n < ENTRIES), [nb - 1] if nb else [])
        partial = maybe[~self.full(maybe.astype(np.int64))].astype(np.int64)
        sums = np.zeros((len(partial), 3, ENTRIES + 1), dtype=np.int64)
        for i, b in enumerate(partial):
            body, cleared, freed = self.entries(int(b))
            for row, values in enumerate((body + self.costs.visit, freed, cleared)):
                run = running(values)
                sums[i, row, : len(run)] = run
                sums[i, row, len(run) :] = run[-1]
        counts = (cnt.present, cnt.accessed, cnt.dirty)
        key = rank_map_stream_key(self.guest.scenario.seed)
        return tick_kernel.LEAF, _prefix_arrays(counts, key, rank_counts(), partial, sums)


class TableBottom(Bottom):
    """SPTEs pointing to the tables one level down: each present one is
    cleared, removing its subtree."""

    def __init__(self, guest: Guest, costs: Costs, level: int, cleared: int | None):
        super().__init__(guest, costs, level, cleared)
        self.below = guest.exist[level - 1]  # the child tables, sorted

    def _sub(self):
        return self.guest.subtree(self.level - 1, self.cleared)

    def totals(self) -> Totals:
        leaves, accessed, dirty, tables = self.guest.subtree_totals(self.level - 1, self.cleared)
        ops = len(self.below)
        body = ops * self.costs.entry_present + self.costs.removal_total(
            tables, leaves, accessed, dirty, roots=ops
        )
        return Totals(ops, leaves, accessed, dirty, tables, body)

    def _max_removal(self, drop_last: bool) -> int | None:
        if len(self.below) <= drop_last:
            return None
        c = self.costs
        weights = c.removal_weights
        return self.guest.subtree_max(self.level - 1, self.cleared, weights, drop_last) + (
            c.removal_const
        )

    def max_body(self) -> int:
        worst = self._max_removal(drop_last=False)
        return 0 if worst is None else self.costs.entry_present + worst

    def max_leaves(self) -> int:
        if not len(self.below):
            return 0
        return self.guest.subtree_field_max(self.level - 1, self.cleared, "leaves", False)

    def extremes(self, flush: int, drop_last: bool) -> Extremes:
        # Is the last visited entry of the last table a child table?
        drop_child = False
        if drop_last and len(self.below):
            last = int(self.tables[-1]) * ENTRIES + int(self.n[-1]) - 1
            drop_child = int(self.below[-1]) == last
        nonpresent = self.visited - len(self.below) - (drop_last and not drop_child)
        worst = self._max_removal(bool(drop_child))
        if worst is None:
            return Extremes(0 if nonpresent > 0 else None, 0)
        freed = self.guest.subtree_field_max(
            self.level - 1, self.cleared, "tables", bool(drop_child)
        )
        return Extremes(self.costs.entry_present + worst + flush, freed)

    def entries(self, b: int):
        n, c = int(self.n[b]), self.costs
        table = int(self.tables[b])
        lo, hi = np.searchsorted(self.below, [table * ENTRIES, table * ENTRIES + n])
        j = self.below[lo:hi] - table * ENTRIES
        body = np.zeros(n, dtype=np.int64)
        freed = np.zeros(n, dtype=np.int64)
        sub = self._sub().rows(int(lo), int(hi))
        body[j] = c.entry_present + c.removal_cost(sub)
        freed[j] = sub.tables
        present = np.zeros(n, dtype=bool)
        present[j] = True
        return body, present, freed

    def table_sums(self) -> TableSums:
        c, g = self.costs, self.guest
        sub = self._sub()
        ops = g.per_table(self.level, 1)
        body = ops * c.entry_present + g.per_table(self.level, c.removal_cost(sub))
        return TableSums(body, ops, g.per_table(self.level, sub.tables))

    def tick_prefix(self) -> tuple[int, tuple]:
        sub, c = self._sub(), self.costs
        cost, freed = c.entry_present + c.removal_cost(sub), sub.tables
        arrays = {}
        for name, v in (("cost", cost), ("tables", freed)):
            if isinstance(v, np.ndarray):
                arrays[f"child_{name}"] = running(v)
            else:
                arrays[f"child_{name}_each"] = v
        child_lo = np.searchsorted(self.below, self.tables * ENTRIES).astype(np.int64)
        return tick_kernel.TABLE, _prefix_arrays(child_lo=child_lo, below=self.below, **arrays)


def bottom_of(guest: Guest, costs: Costs, zap_level: int, cleared: int | None) -> Bottom:
    """The bottom of a pass at ``zap_level`` after passes up to ``cleared``."""
    leaf = guest.leaf_level
    if cleared is None and zap_level < leaf:
        return SkipBottom(guest, costs, leaf, cleared)
    if cleared is None and zap_level == leaf:
        return LeafBottom(guest, costs, leaf, cleared)
    return TableBottom(guest, costs, zap_level, cleared)
