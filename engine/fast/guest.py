"""The guest's page table in aggregate: which tables exist at each level, the
leaves each table holds itself (``runs``), and what each subtree holds.

Nothing here depends on a cost model or on scheduling, so one Guest serves
every scenario of one VM shape (``GuestCache``).  What is asked more than
once (visited entries, child runs, subtree sums, reductions over all leaf
tables) is kept.  Per-table arrays exist only where they are small or
cheap: a 16 TiB guest has 8M level-1 tables, whose counts stay int16.  A
table may hold leaves and child tables at once (a slot's edge, a split
huge page): its subtree sums add what it holds to what its children do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..geometry import PTES_PER_TABLE, SPTE_LEVEL_BITS, pages_per_spte, table_span
from ..scenario import Scenario
from .arrays import first_of_runs, linear_max, per_run
from .runs import LeafLevel, leaf_levels, parent_tables


class Children(NamedTuple):
    """How the existing tables one level down hang under the tables of a
    level: the children of ``tables[pos[i]]`` are the ``count[i]`` tables of
    the level below from ``start[i]`` on (tables without children are left
    out)."""

    start: np.ndarray
    count: np.ndarray
    pos: np.ndarray


@dataclass(frozen=True)
class SubtreeSums:
    """Per existing table at one level: what its subtree holds now.  A field
    may be a plain int, the same for every table of the level (the emptied
    tables of the last zap level: a 16 TiB guest has 8M of them)."""

    leaves: np.ndarray | int  # present leaves
    accessed: np.ndarray | int
    dirty: np.ndarray | int
    tables: np.ndarray | int  # tables, the table itself included

    def rows(self, lo: int, hi: int) -> SubtreeSums:
        def cut(v):
            return v[lo:hi] if isinstance(v, np.ndarray) else v

        return SubtreeSums(*(cut(v) for v in (self.leaves, self.accessed, self.dirty, self.tables)))


@dataclass
class Guest:
    """The built page table, in aggregate: per level the sorted indices of
    the tables that exist (index = base GFN / table span), and per leaf
    level (1 to 3) the leaves its tables hold (``runs.LeafLevel``)."""

    scenario: Scenario
    leaves: dict[int, LeafLevel]
    exist: dict[int, np.ndarray]
    _kept: dict[tuple, object] = field(default_factory=dict)
    # Passes already built on this guest, by (zap level, cleared, costs):
    # scenarios of one VM shape that differ in vCPUs, flush_on_yield or
    # scheduling walk the same passes.  Kept only for guests small enough
    # (PASS_CACHE_TABLES) that holding their passes costs little memory.
    passes: dict[tuple, object] = field(default_factory=dict)

    @classmethod
    def build(cls, scenario: Scenario) -> Guest:
        leaves = leaf_levels(scenario)
        root = scenario.root_level
        exist: dict[int, np.ndarray] = {}
        below = np.zeros(0, dtype=np.int64)
        for level in range(1, root):
            up = parent_tables(below)
            if level in leaves:
                leaf = leaves[level]
                holds = leaf.held[0] > 0
                holding = leaf.tables if holds.all() else leaf.tables[holds]
                up = holding if not len(up) else np.union1d(up, holding)
            exist[level] = below = up
        exist[root] = np.zeros(1, dtype=np.int64)
        return cls(scenario, leaves, exist)

    @property
    def root_level(self) -> int:
        return self.scenario.root_level

    @property
    def lowest(self) -> int:
        """The lowest level with a table (the root's, for an empty guest)."""
        return min(level for level, t in self.exist.items() if len(t))

    @property
    def tables(self) -> int:
        """Tables that exist, the root included."""
        return sum(len(t) for t in self.exist.values())

    def _keep(self, key: tuple, make):
        if key not in self._kept:
            self._kept[key] = make()
        return self._kept[key]

    def present_at(self, level: int) -> int:
        """Present leaves at ``level`` (4K, 2M or 1G)."""
        return self.leaves[level].present if level in self.leaves else 0

    def position(self, level: int) -> np.ndarray | None:
        """Per existing table at a leaf level, its position in the level's
        LeafLevel.tables, or -1 if it holds no run; None when the two lists
        are the same (every table that holds a run exists, and only those)."""

        def make():
            leaf, tables = self.leaves[level], self.exist[level]
            if tables is leaf.tables or (
                len(leaf.tables) == len(tables) and np.array_equal(leaf.tables, tables)
            ):
                return None
            pos = np.searchsorted(leaf.tables, tables)
            ok = pos < len(leaf.tables)
            ok[ok] = leaf.tables[pos[ok]] == tables[ok]
            return np.where(ok, pos, -1)

        return self._keep(("position", level), make)

    def aligned(self, level: int, values: np.ndarray, fill=0) -> np.ndarray:
        """Per-LeafLevel-table ``values`` per existing table at ``level``."""
        pos = self.position(level)
        if pos is None:
            return values
        out = np.full(len(pos), fill, dtype=values.dtype)
        ok = pos >= 0
        out[ok] = values[pos[ok]]
        return out

    def held(self, level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(present, accessed, dirty) leaves each existing table at ``level``
        holds itself (int16), or None if no table at that level holds any."""

        def make():
            leaf = self.leaves.get(level)
            if leaf is None or not leaf.present:
                return None
            return tuple(self.aligned(level, c) for c in leaf.held)

        return self._keep(("held", level), make)

    # Walk geometry -----------------------------------------------------

    def visited(self, level: int) -> np.ndarray:
        """Entries visited in each existing table at ``level``: those whose
        GFN is below tdp_mmu_max_gfn_host()."""
        return self._keep(
            ("visited", level), lambda: self.visited_entries(level, self.exist[level])
        )

    def visited_total(self, level: int) -> int:
        return self._keep(("visited_total", level), lambda: int(self.visited(level).sum()))

    def visited_entries(self, level: int, tables: np.ndarray) -> np.ndarray:
        """Entries of each of ``tables`` whose GFN is below tdp_mmu_max_gfn_host()."""
        end = self.scenario.end_gfn
        n = np.full(len(tables), PTES_PER_TABLE, dtype=np.int64)
        # Only tables that reach past end are cut short (tables are sorted).
        cut = int(np.searchsorted(tables, end // table_span(level), side="left"))
        base = tables[cut:] * table_span(level)
        n[cut:] = np.minimum(PTES_PER_TABLE, -((base - end) // pages_per_spte(level)))
        return n

    def children(self, level: int) -> Children:
        """The runs of tables at ``level - 1`` under each table at ``level``."""

        def make() -> Children:
            parent = self.exist[level - 1] >> SPTE_LEVEL_BITS
            start = first_of_runs(parent)
            count = np.diff(start, append=len(parent))
            return Children(start, count, np.searchsorted(self.exist[level], parent[start]))

        return self._keep(("children", level), make)

    def per_table(self, level: int, child_values, ufunc=np.add) -> np.ndarray:
        """``ufunc`` of the values of each table's children (0 without children)."""
        ch = self.children(level)
        out = np.zeros(len(self.exist[level]), dtype=np.int64)
        if len(ch.start):
            out[ch.pos] = per_run(child_values, ch.start, ch.count, ufunc)
        return out

    # What the subtrees hold --------------------------------------------

    def subtree(self, level: int, cleared: int | None) -> SubtreeSums:
        """Subtree sums of the tables at ``level`` after passes up to zap
        level ``cleared`` (None: nothing cleared yet).  After a pass at
        level c, the tables at c are empty and those below are gone."""

        def make() -> SubtreeSums:
            if cleared is not None and level == cleared:
                return SubtreeSums(0, 0, 0, 1)
            own = self.held(level)
            if level <= self.lowest:  # nothing below (no table below the lowest)
                if own is None:
                    return SubtreeSums(0, 0, 0, 1)
                return SubtreeSums(*own, 1)
            child = self.subtree(level - 1, cleared)
            counts = [self.per_table(level, v) for v in (child.leaves, child.accessed, child.dirty)]
            if own is not None:
                counts = [c + o for c, o in zip(counts, own, strict=True)]
            return SubtreeSums(*counts, tables=1 + self.per_table(level, child.tables))

        return self._keep(("subtree", level, cleared), make)

    def subtree_totals(self, level: int, cleared: int | None) -> tuple[int, int, int, int]:
        """Sums over all tables at ``level`` of (leaves, accessed, dirty, tables)."""

        def make():
            s = self.subtree(level, cleared)
            n = len(self.exist[level])
            return tuple(
                int(v.sum(dtype=np.int64)) if isinstance(v, np.ndarray) else v * n
                for v in (s.leaves, s.accessed, s.dirty, s.tables)
            )

        return self._keep(("subtree_totals", level, cleared), make)

    def subtree_max(self, level: int, cleared: int | None, weights: tuple, drop_last: bool) -> int:
        """max over the tables at ``level`` (but the last one when
        ``drop_last``) of ``w_t * tables + w_l * leaves + w_a * accessed +
        w_d * dirty``: the costliest removal for a cost model's weights."""

        def make() -> int:
            s = self.subtree(level, cleared)
            n = len(self.exist[level]) - drop_last
            w_t, w_l, w_a, w_d = weights
            counts = (s.leaves, s.accessed, s.dirty)
            terms = [(v, w) for v, w in zip(counts, (w_l, w_a, w_d), strict=True) if w]
            arrays = [(v[:n], w) for v, w in terms if isinstance(v, np.ndarray)]
            const = sum(v * w for v, w in terms if not isinstance(v, np.ndarray))
            if isinstance(s.tables, np.ndarray):
                arrays.append((s.tables[:n], w_t))
            else:
                const += s.tables * w_t
            return linear_max(const, *arrays) if arrays else const

        return self._keep(("subtree_max", level, cleared, weights, drop_last), make)

    def subtree_field_max(self, level: int, cleared: int | None, name: str, drop_last: bool):
        def make() -> int:
            v = getattr(self.subtree(level, cleared), name)
            if not isinstance(v, np.ndarray):
                return v
            n = len(v) - drop_last
            return int(v[:n].max()) if n else 0

        return self._keep(("subtree_field_max", level, cleared, name, drop_last), make)

    def held_any(self, level: int, drop_last: bool) -> tuple[bool, bool, bool]:
        """Whether any existing table at ``level`` (but the last one when
        ``drop_last``) holds a present, an accessed, a dirty leaf itself."""

        def make():
            own = self.held(level)
            if own is None:
                return (False, False, False)
            upto = len(own[0]) - drop_last
            return tuple(bool(x[:upto].any()) for x in own)

        return self._keep(("held_any", level, drop_last), make)


__all__ = ["Children", "Guest", "SubtreeSums"]
