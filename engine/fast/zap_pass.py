"""One zap pass over the guest's page table: the levels it walks, its
bottom tables, its totals, and the shape of its walk.

A pass at zap level Z walks every existing table at levels >= its bottom
level B in pre-order.  A visit *steps down* after a present table entry
above B (to entry 0 of the child), and otherwise the walk *steps side*.  So
the walk is a sequence of *chains*: a visit reached by a step side, then the
step-downs below it, down to the first entry that does not step down (its
*chain end*: a bottom entry, or a non-present entry or a leaf above B).  A
visit may yield only if the walk made progress since the last yield (the
forward-progress rule): a chain's visits after its first one may, if the
first did not.  When every check that may yield does (``always``), only
step sides yield, so yields fall between chains, and everything the
``always`` walk reports follows from per-level counts, the first and last
chain, and maxima over chain ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..geometry import SPTE_LEVEL_BITS
from .bottom import Bottom, Entry, bottom_of
from .costs import Costs
from .guest import Guest
from .pieces import Pieces


class ChainEnd(NamedTuple):
    """The last visit of a chain: its level and entry."""

    level: int
    entry: Entry


NOTHING = Entry(0, False, 0)  # a non-present entry above the bottom


@dataclass(frozen=True)
class WalkCounts:
    """Visits of a pass, and its step sides by the level they land on."""

    visits: int  # yields' own visits excluded
    step_sides: dict[int, int]  # by level
    chain_ends: int  # one more than the step sides
    root: int

    @property
    def restart_visits(self) -> int:
        """If every step side yields: the ancestors its restarts walk down."""
        return sum(n * (self.root - level) for level, n in self.step_sides.items())


class Pass:
    """One pass at ``zap_level`` after passes up to ``cleared`` (None: no
    leaf cleared yet)."""

    def __init__(self, guest: Guest, costs: Costs, zap_level: int, cleared: int | None):
        self.guest, self.costs = guest, costs
        self.root = guest.root_level
        self.zap_level = zap_level
        self.bottom: Bottom = bottom_of(guest, costs, zap_level, cleared)
        self.totals = self.bottom.totals()
        self.max_op = costs.visit + self.bottom.max_body()
        self.max_op_leaves = self.bottom.max_leaves()
        self.upper_visits = sum(
            guest.visited_total(level) for level in range(self.bottom.level + 1, self.root + 1)
        )
        self.visits = self.upper_visits + self.bottom.visited
        self._pieces: Pieces | None = None
        self._table_costs: tuple | None = None

    # The chains --------------------------------------------------------

    def walk_counts(self) -> WalkCounts:
        """Entry 0 of every table but the root is reached by a step down;
        every other visited entry by a step side."""
        g, low = self.guest, self.bottom.level
        sides = {lv: g.visited_total(lv) - len(g.exist[lv]) for lv in range(low, self.root + 1)}
        return WalkCounts(self.visits, sides, 1 + sum(sides.values()), self.root)

    def first_chain(self) -> ChainEnd:
        """Where the walk's first chain, from entry 0 of the root down, ends."""
        g, low = self.guest, self.bottom.level
        level = self.root
        while level > low:
            below = g.exist[level - 1]
            if not (len(below) and below[0] == 0):  # entry 0 is not present
                return ChainEnd(level, NOTHING)
            level -= 1
        return ChainEnd(low, self.bottom.entry(0, 0))

    def last_chain(self) -> ChainEnd:
        """Where the walk's last chain ends: the last visit of the pass, down
        the last visited entry of each table from the root."""
        g, low = self.guest, self.bottom.level
        level, table, pos = self.root, 0, 0
        while True:
            e = int(g.visited(level)[pos]) - 1
            if level == low:
                return ChainEnd(level, self.bottom.entry(pos, e))
            child = (table << SPTE_LEVEL_BITS) + e
            below = g.exist[level - 1]
            if not (len(below) and below[-1] == child):
                return ChainEnd(level, NOTHING)
            level, table, pos = level - 1, child, len(below) - 1

    def chain_end_extremes(self, flush: int, last: ChainEnd) -> tuple[int, int]:
        """Over every chain end but ``last``: the most a hold ending there
        holds if it began with a restart, ``(root - level + 2)`` visits (the
        restart's walk down to the chain end, and the next visit, which
        yields) plus the chain end's body and ``flush`` if it cleared; and
        the most tables it freed.  (For the first chain end that is at most
        its true hold, which may have begun before the pass.)"""
        g, low, visit = self.guest, self.bottom.level, self.costs.visit
        hold = freed = 0
        for level in range(low + 1, self.root + 1):
            nonpresent = g.visited_total(level) - len(g.exist[level - 1]) - (last.level == level)
            if nonpresent > 0:
                hold = max(hold, (self.root - level + 2) * visit)
        x = self.bottom.extremes(flush, drop_last=last.level == low)
        if x.body is not None:
            hold = max(hold, (self.root - low + 2) * visit + x.body)
            freed = max(freed, x.freed)
        return hold, freed

    # For tick: the walk in pieces --------------------------------------

    def table_costs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per bottom table: cost with its visits, clears, tables freed."""
        if self._table_costs is None:
            sums = self.bottom.table_sums()
            cost = sums.body.astype(np.int64, copy=True)
            cost += self.bottom.n * self.costs.visit
            self._table_costs = (cost, sums.ops, sums.freed)
        return self._table_costs

    def pieces(self, with_ops: bool) -> Pieces:
        """The walk's pieces; running clears only when ``with_ops`` (a cached
        pass may be asked first without them, then with)."""
        if self._pieces is None or (with_ops and self._pieces.cum_ops is None):
            self._pieces = Pieces.of(self, with_ops)
        return self._pieces
