"""What a pass does to the entries of its bottom tables.

A pass at zap level Z walks every table at levels >= its bottom level B (Z,
or the lowest level with tables when Z is below it).  Entries above B only
step down or side (a leaf above Z is skipped like a non-present entry); the
entries of the bottom tables are where the work is, and what they are
depends on the pass and on the guest's layout:

- :class:`SkipBottom`: leaves above the zap level (a 4K pass over 2M pages):
  visited, never cleared.
- :class:`LeafBottom`: leaves at the zap level: each present one is cleared,
  with its A/D write-back.
- :class:`TableBottom`: SPTEs pointing to child tables: each present one is
  cleared, which removes its subtree (handle_removed_pt, recursively).
- :class:`MixedBottom`: tables that hold both, the leaves the mapping-level
  rule puts at level B and child tables where smaller pages map a slot's
  edge or a split huge page (q35's first gigabyte, ``split_ratio``).

Each answers, without reading entries: the pass's totals, its costliest
entry, and the maxima the ``always`` walk needs; and, for ``tick``, the
per-table sums, and what the compiled walk needs to find the prefix cost
of any table's first j entries in closed form.  ``entries`` reads one
table entry by entry.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..geometry import PTES_PER_TABLE
from ..population import (
    ACCESSED,
    DIRTY,
    NONPRESENT,
    codes_below,
    rank_counts,
    rank_map_key,
    rank_map_stream_key,
    rank_values,
    run_key,
)
from ..scenario import LEVEL_BY_NAME
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

    def __add__(self, other: Totals) -> Totals:  # type: ignore[override]
        return Totals(*(a + b for a, b in zip(self, other, strict=True)))


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

    def __or__(self, other: Extremes) -> Extremes:  # type: ignore[override]
        bodies = [b for b in (self.body, other.body) if b is not None]
        return Extremes(max(bodies) if bodies else None, max(self.freed, other.freed))


class TableSums(NamedTuple):
    """Per bottom table: body cost (visits excluded), clears, tables freed."""

    body: np.ndarray
    ops: np.ndarray
    freed: np.ndarray


_NONE = np.zeros(0, dtype=np.int64)


def _prefix_arrays(leaf: tuple | None = None, child: tuple | None = None) -> tuple:
    """The tick kernel's bottom arrays (tick_kernel._in_table), typed alike
    for every kind so that it has one compiled signature: the leaf part
    (thresholds, rank maps, partial runs, split entries) and the child part
    (child tables and the running sums of their removals)."""
    if leaf is None:
        i16 = np.zeros(0, dtype=np.int16)
        leaf = (
            i16,
            i16,
            i16,
            i16,
            np.zeros(0, dtype=np.uint64),
            np.uint64(0),
            np.zeros((1, 1, 1), dtype=np.int16),
            _NONE,
            _NONE,
            _NONE,
            _NONE,
            _NONE,
            np.zeros((0, 3), dtype=np.int64),
            _NONE,
            np.zeros((1, 3), dtype=np.int64),
        )
    if child is None:
        child = (_NONE, _NONE, _NONE, _NONE, np.int64(0), np.int64(0))
    return (*leaf, *child)


class Bottom:
    """The bottom tables of one pass: ``tables`` (sorted indices at
    ``level``) and ``n``, the entries visited in each."""

    kind = tick_kernel.SKIP

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

    def tick_prefix(self) -> tuple[int, tuple]:
        """How the tick kernel finds the prefix costs of a bottom table's
        entries: its kind and arrays (tick_kernel._in_table)."""
        return self.kind, _prefix_arrays()


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
    """Leaves at the zap level, held by the bottom tables, cleared entry by
    entry.  Where they are in a table comes from the population draw: a run
    per slot, the split entries carved out."""

    kind = tick_kernel.LEAF

    def __init__(self, guest: Guest, costs: Costs, level: int, cleared: int | None):
        super().__init__(guest, costs, level, cleared)
        self.leaf = guest.leaves[level]
        self.held = guest.held(level)

    def totals(self) -> Totals:
        c = self.costs
        leaves, accessed, dirty = (int(x.sum(dtype=np.int64)) for x in self.held)
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
        return self._best_leaf(*self.guest.held_any(self.level, drop_last=False))

    def max_leaves(self) -> int:
        return int(self.guest.held_any(self.level, drop_last=False)[0])

    def extremes(self, flush: int, drop_last: bool) -> Extremes:
        if self.visited <= drop_last:
            return Extremes(None, 0)
        any_p, any_a, any_d = self.guest.held_any(self.level, drop_last)
        best = self._best_leaf(any_p, any_a, any_d) + (flush if any_p else 0)
        if drop_last:
            # The last table's entries but its last one, read one by one.
            body, cleared, _ = self.leaf_entries(len(self.tables) - 1)
            if len(body) > 1:
                best = max(best, int((body[:-1] + flush * cleared[:-1]).max()))
        return Extremes(best, 0)

    def codes(self, b: int) -> np.ndarray:
        """The leaf codes of bottom table ``b``'s 512 entries (non-present
        where it holds no leaf)."""
        leaf, seed = self.leaf, self.guest.scenario.seed
        codes = np.zeros(ENTRIES, dtype=np.uint8)
        pos = self.guest.position(self.level)
        p = b if pos is None else int(pos[b])
        if p < 0:
            return codes
        t = int(self.tables[b])
        runs = leaf.partial
        lo, hi = np.searchsorted(runs.table, [p, p + 1])
        if lo < hi:
            for r in range(lo, hi):
                a, z = int(runs.lo[r]), int(runs.hi[r])
                values = rank_values(seed, int(runs.key[r]), np.arange(a, z))
                codes[a:z] = codes_below(values, *(int(x) for x in runs.thresholds[r]))
        else:
            s = int(leaf.slot[p])
            backing = LEVEL_BY_NAME[self.guest.scenario.slots[s].page_size]
            key = int(run_key(t, s, self.level, backing))
            values = rank_values(seed, key, np.arange(ENTRIES))
            codes[:] = codes_below(values, *(int(x[p]) for x in leaf.drawn))
        split = leaf.splits.entries
        a, z = np.searchsorted(split, [t * ENTRIES, (t + 1) * ENTRIES])
        codes[split[a:z] - t * ENTRIES] = NONPRESENT  # mapped by a child table instead
        return codes

    def leaf_entries(self, b: int):
        n, c = int(self.n[b]), self.costs
        codes = self.codes(b)[:n]
        present = codes != NONPRESENT
        body = (
            present * c.entry_present
            + ((codes & ACCESSED) == ACCESSED) * c.accessed
            + (codes == DIRTY) * c.dirty
        ).astype(np.int64)
        return body, present, np.zeros(n, dtype=np.int64)

    def entries(self, b: int):
        return self.leaf_entries(b)

    def leaf_sums(self) -> TableSums:
        c = self.costs
        present, accessed, dirty = self.held
        body = linear(
            len(present), 0, (present, c.entry_present), (accessed, c.accessed), (dirty, c.dirty)
        )
        return TableSums(body, present, np.zeros(len(present), dtype=np.int16))

    def table_sums(self) -> TableSums:
        return self.leaf_sums()

    def leaf_prefix(self) -> tuple:
        """The leaf part of the tick kernel's arrays."""
        guest, leaf, level = self.guest, self.leaf, self.level
        seed, slots = guest.scenario.seed, guest.scenario.slots
        drawn = tuple(guest.aligned(level, x) for x in leaf.drawn)
        table_slot = guest.aligned(level, leaf.slot)
        salts = np.array(
            [int(run_key(0, s, level, LEVEL_BY_NAME[m.page_size])) for s, m in enumerate(slots)],
            dtype=np.uint64,
        )
        runs = leaf.partial
        # Partial runs of the tables that exist, by bottom position.
        pos = guest.position(level)
        if pos is None:
            run_b, keep = runs.table, np.ones(len(runs.table), dtype=bool)
        else:
            at = np.searchsorted(self.tables, leaf.tables[runs.table])
            ok = at < len(self.tables)
            ok[ok] = self.tables[at[ok]] == leaf.tables[runs.table[ok]]
            run_b, keep = at, ok
        midx, add = rank_map_key(seed, runs.key)
        split = leaf.splits.entries
        cum = np.zeros((len(split) + 1, 3), dtype=np.int64)
        np.cumsum(leaf.split_flags, axis=0, out=cum[1:])
        return (
            *drawn,
            table_slot,
            salts,
            rank_map_stream_key(seed),
            rank_counts(),
            run_b[keep].astype(np.int64),
            runs.lo[keep],
            runs.hi[keep],
            midx[keep].astype(np.int64),
            add[keep].astype(np.int64),
            runs.thresholds[keep],
            split,
            cum,
        )

    def tick_prefix(self) -> tuple[int, tuple]:
        return self.kind, _prefix_arrays(leaf=self.leaf_prefix())


class TableBottom(Bottom):
    """SPTEs pointing to the tables one level down: each present one is
    cleared, removing its subtree."""

    kind = tick_kernel.TABLE

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

    def child_entries(self, b: int):
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

    def entries(self, b: int):
        return self.child_entries(b)

    def child_sums(self) -> TableSums:
        c, g = self.costs, self.guest
        sub = self._sub()
        ops = g.per_table(self.level, 1)
        body = ops * c.entry_present + g.per_table(self.level, c.removal_cost(sub))
        return TableSums(body, ops, g.per_table(self.level, sub.tables))

    def table_sums(self) -> TableSums:
        return self.child_sums()

    def child_prefix(self) -> tuple:
        """The child part of the tick kernel's arrays."""
        sub, c = self._sub(), self.costs
        cost, freed = c.entry_present + c.removal_cost(sub), sub.tables
        sums, each = {}, {}
        for name, v in (("cost", cost), ("tables", freed)):
            if isinstance(v, np.ndarray):
                sums[name], each[name] = running(v), 0
            else:
                sums[name], each[name] = _NONE, v
        child_lo = np.searchsorted(self.below, self.tables * ENTRIES).astype(np.int64)
        return (
            child_lo,
            self.below,
            sums["cost"],
            sums["tables"],
            np.int64(each["cost"]),
            np.int64(each["tables"]),
        )

    def tick_prefix(self) -> tuple[int, tuple]:
        return self.kind, _prefix_arrays(child=self.child_prefix())


class MixedBottom(LeafBottom, TableBottom):
    """Bottom tables holding leaves at the zap level and child tables: every
    answer is the leaf part's combined with the child part's (an entry is
    one or the other, or non-present)."""

    kind = tick_kernel.MIXED

    def totals(self) -> Totals:
        return LeafBottom.totals(self) + TableBottom.totals(self)

    def max_body(self) -> int:
        return max(LeafBottom.max_body(self), TableBottom.max_body(self))

    def max_leaves(self) -> int:
        return max(LeafBottom.max_leaves(self), TableBottom.max_leaves(self))

    def extremes(self, flush: int, drop_last: bool) -> Extremes:
        return LeafBottom.extremes(self, flush, drop_last) | TableBottom.extremes(
            self, flush, drop_last
        )

    def entries(self, b: int):
        leaf, child = self.leaf_entries(b), self.child_entries(b)
        return leaf[0] + child[0], leaf[1] | child[1], child[2]

    def table_sums(self) -> TableSums:
        leaf, child = self.leaf_sums(), self.child_sums()
        return TableSums(*(a.astype(np.int64) + b for a, b in zip(leaf, child, strict=True)))

    def tick_prefix(self) -> tuple[int, tuple]:
        return self.kind, _prefix_arrays(self.leaf_prefix(), self.child_prefix())


def bottom_of(guest: Guest, costs: Costs, zap_level: int, cleared: int | None) -> Bottom:
    """The bottom of a pass at ``zap_level`` after passes up to ``cleared``:
    its tables hold leaves at that level (which earlier, lower passes leave
    in place) and/or child tables; a level below every table's skips."""
    lowest = guest.lowest if cleared is None else cleared
    if cleared is None and zap_level < lowest:
        return SkipBottom(guest, costs, lowest, cleared)
    leaves = guest.held(zap_level) is not None
    children = zap_level > lowest
    if leaves and children:
        return MixedBottom(guest, costs, zap_level, cleared)
    if leaves:
        return LeafBottom(guest, costs, zap_level, cleared)
    return TableBottom(guest, costs, zap_level, cleared)
