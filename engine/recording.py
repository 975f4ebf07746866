"""The reference engine's events of one zap (``engine.events``): the literal
walk of ``engine.reference``, with a Timeline that writes down every RCU hold
and keeps the longest operations as they happen."""

from __future__ import annotations

import heapq

import numpy as np

from .cost_model import CostModel
from .events import Holds, Operation, PassSpan, ZapEvents, level_name, longest_first
from .reference import RootZap, Table
from .scenario import Scenario
from .timeline import Timeline, zap_result


class RecordingTimeline(Timeline):
    """The Timeline of engine/timeline.py, writing down each hold as it ends
    and the ``keep`` longest operations (the SPTE of each read from
    ``where()``: its level and first GFN)."""

    def __init__(self, scenario: Scenario, cost_model: CostModel, keep: int, where):
        super().__init__(scenario, cost_model)
        self.keep, self.where = keep, where
        self.pass_index = 0
        self.hold_rows: list[tuple[int, int, bool, int, int]] = []
        # A min-heap of (duration, -start, count, operation): the shortest,
        # and of equals the latest, goes first.
        self.longest: list[tuple] = []
        self.operations = 0  # a tie-break in the heap: one per visit
        self.leaves_cleared = 0  # by the operation running now
        self.tables_before = 0

    def begin_visit(self) -> None:
        super().begin_visit()
        self.tables_before = self.tables_freed

    def end_op(self, leaves: int) -> None:
        super().end_op(leaves)
        self.operations += 1
        duration = self.clock - self.op_start
        full = len(self.longest) >= self.keep
        if full and (duration, -self.op_start) <= self.longest[0][:2]:
            return  # not among the longest: most visits end here
        level, gfn = self.where()
        freed = self.tables_freed - self.tables_before
        op = Operation(self.op_start, duration, self.pass_index, level, gfn, leaves, freed)
        item = (duration, -self.op_start, self.operations, op)
        if full:
            heapq.heapreplace(self.longest, item)
        else:
            heapq.heappush(self.longest, item)

    def flush_and_yield(self) -> None:
        flushes = self.tlb_flushes
        super().flush_and_yield()
        if self.tlb_flushes > flushes:  # the hold just written down ended with a flush
            start, end, _, tables, index = self.hold_rows[-1]
            self.hold_rows[-1] = (start, end, True, tables, index)

    def end_hold(self) -> None:
        self.hold_rows.append(
            (self.hold_start, self.clock, False, self.hold_tables, self.pass_index)
        )
        super().end_hold()


class RecordingZap(RootZap):
    """RootZap with a RecordingTimeline, and each pass's span written down."""

    def __init__(self, scenario: Scenario, cost_model: CostModel, keep: int):
        timeline = RecordingTimeline(scenario, cost_model, keep, self.spte_at)
        super().__init__(scenario, cost_model, timeline)
        self.passes: list[PassSpan] = []

    def spte_at(self) -> tuple[int, int]:
        """The level and first GFN of the SPTE the walk is at."""
        it = self.iter
        return it.level, it.gfn

    def zap_pass(self, root: Table, zap_level: int, budget: int) -> None:
        tl = self.timeline
        start, yields, visits = tl.clock, tl.yields, tl.visits
        tl.pass_index = len(self.passes)
        super().zap_pass(root, zap_level, budget)
        name = level_name(zap_level, self.scenario.root_level)
        self.passes.append(
            PassSpan(zap_level, name, start, tl.clock, tl.yields - yields, tl.visits - visits)
        )


def record_reference(scenario: Scenario, cost_model: CostModel, keep: int) -> ZapEvents:
    zap = RecordingZap(scenario, cost_model, keep)
    zap.run()
    tl = zap.timeline
    result = zap_result([tl], 1)  # one root: engine.events refuses more
    rows = tl.hold_rows
    holds = Holds(
        *(np.array([r[i] for r in rows], dtype=bool if i == 2 else np.int64) for i in range(5))
    )
    ops = longest_first([item[-1] for item in tl.longest], keep)
    return ZapEvents(
        scenario=scenario,
        engine="reference",
        cost_model=cost_model,
        result=result,
        total_ps=tl.clock,
        passes=tuple(zap.passes),
        holds=holds,
        summarized=(),
        operations=ops,
    )


__all__ = ["RecordingTimeline", "RecordingZap", "record_reference"]
