"""The engine's Timeline, advanced a stretch of the walk at a time."""

from __future__ import annotations

from ..timeline import Timeline


class FastTimeline(Timeline):
    """The Timeline of engine/timeline.py, advanced a piece at a time: a
    stretch of the walk is charged as a whole, and a yield comes with the
    visit it aborts and the restart's walk back down."""

    def advance(self, cost: int, visits: int, tables: int, cleared: bool) -> None:
        self.clock += cost
        self.visits += visits
        self.hold_tables += tables
        self.flush_pending |= cleared

    def yield_and_restart(self, level: int) -> None:
        """The aborted visit, flush, yield, then the restart's walk down from
        the root to the interrupted SPTE at ``level`` (its ancestors)."""
        self.clock += self.cm.visit_ps
        self.visits += 1
        self.flush_and_yield()
        ancestors = self.scenario.root_level - level
        self.clock += ancestors * self.cm.visit_ps
        self.visits += ancestors
