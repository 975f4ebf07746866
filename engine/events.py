"""The events of one root zap: its passes, RCU holds, yields, TLB flushes and
longest operations, on the zap's own clock (integer picoseconds from the
moment it takes RCU and mmu_lock).

``zap_events(scenario, engine, cost_model)`` runs the zap with a recorder and
returns ``ZapEvents``; its ``result`` is that run's ZapResult, the same as
``simulate`` gives.  Both engines record:

- the reference engine, as it walks: every RCU hold, and the longest
  operations with the SPTE each cleared;
- the fast engine, from its walks: the ``tick`` loop logs the place of each
  yield it finds; an ``always`` pass is walked by that loop with a 1 ps
  interval, which yields at the same visits (every eligible check sees
  need_resched, since every visit takes at least 1 ps); the longest
  operations are read from the passes' bottom tables and placed on the clock
  by the yields before them.

A zap with more yields than ``max_yields`` (the ``always`` walk of a 16 TiB
4K guest has 4.3 billion) keeps the holds of its passes, in order, while
they fit, and summarizes the holds of the other passes (``SummarizedHolds``:
how many, the longest, the span they cover); their operations keep their
length and SPTE but not their time.  Nothing here writes a file: a trace
(``sweep.trace``) is drawn from these events.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cost_model import DEFAULT_COST_MODEL, CostModel, load_cost_model
from .result import ZapResult
from .scenario import LEVEL_NAMES, Scenario, ScenarioError

# The most yields a fast-engine trace places one by one (32 bytes each).
MAX_YIELDS = 1 << 22
# The longest operations kept.
MAX_OPERATIONS = 1000


@dataclass(frozen=True)
class PassSpan:
    """One pass of the strategy: its zap level, its span on the clock (from
    its first visit to its last, the yields within it included), its yields
    and visits (restarts included)."""

    zap_level: int
    name: str  # as the strategy names it: '4K', ..., 'root'
    start_ps: int
    end_ps: int
    yields: int
    visits: int


@dataclass(frozen=True)
class Holds:
    """RCU holds in clock order: where each starts and ends, whether a TLB
    flush (``flush_ps`` long, just before the end) ended it, the page tables
    it queued for freeing (call_rcu), and the pass it ended in.  Every hold
    but the zap's last ends with a yield."""

    start_ps: np.ndarray
    end_ps: np.ndarray
    flushed: np.ndarray
    tables: np.ndarray
    pass_index: np.ndarray

    def __len__(self) -> int:
        return len(self.start_ps)

    @property
    def duration_ps(self) -> np.ndarray:
        return self.end_ps - self.start_ps

    @classmethod
    def concat(cls, parts: list[Holds]) -> Holds:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty, empty.astype(bool), empty, empty)
        return cls(
            *(
                np.concatenate([getattr(h, f) for h in parts])
                for f in ("start_ps", "end_ps", "flushed", "tables", "pass_index")
            )
        )


@dataclass(frozen=True)
class SummarizedHolds:
    """The holds that ended in one pass, counted rather than listed: how
    many, the longest, and the span from the first's start to the last's end."""

    pass_index: int
    holds: int
    longest_ps: int
    start_ps: int
    end_ps: int


@dataclass(frozen=True)
class Operation:
    """One operation (a loop-body execution: the visit and the SPTE it
    clears, with the whole removal recursion).  ``start_ps`` is None for an
    operation of a pass whose holds are summarized."""

    start_ps: int | None
    duration_ps: int
    pass_index: int
    level: int  # of the SPTE it cleared
    gfn: int  # the first GFN that SPTE maps
    leaves: int
    tables_freed: int


@dataclass(frozen=True)
class ZapEvents:
    scenario: Scenario
    engine: str
    cost_model: CostModel
    result: ZapResult
    total_ps: int
    passes: tuple[PassSpan, ...]
    holds: Holds
    summarized: tuple[SummarizedHolds, ...]
    operations: tuple[Operation, ...]  # the longest first (one operation per visit)

    @property
    def yield_ps(self) -> int:
        return self.cost_model.yield_ps

    @property
    def flush_ps(self) -> int:
        return self.cost_model.flush_ps(self.scenario.vcpus)

    @property
    def hold_count(self) -> int:
        return len(self.holds) + sum(s.holds for s in self.summarized)

    @property
    def longest_hold_ps(self) -> int:
        listed = int(self.holds.duration_ps.max()) if len(self.holds) else 0
        return max([listed, *(s.longest_ps for s in self.summarized)])

    def check(self) -> None:
        """Raise EventsMismatch unless the events agree with the result:
        hold count, longest hold, longest operation, total time, flushes."""
        r, s = self.result, self.scenario
        wants = {
            "holds": (self.hold_count, r.yields + 1),
            "max_rcu_hold_ns": (self.longest_hold_ps // 1000, r.max_rcu_hold_ns),
            "max_op_ns": (self.operations[0].duration_ps // 1000, r.max_op_ns),
            "total_ns": (self.total_ps // 1000, r.total_ns),
            "rcu_stall": (self.longest_hold_ps >= s.rcu_stall_timeout_ps, r.rcu_stall),
        }
        if not self.summarized:
            wants["tlb_flushes"] = (int(self.holds.flushed.sum()), r.tlb_flushes)
            wants["hold_end"] = (int(self.holds.end_ps[-1]), self.total_ps)
        bad = {k: v for k, v in wants.items() if v[0] != v[1]}
        if bad:
            raise EventsMismatch(bad)


class EventsMismatch(AssertionError):
    """The recorded events disagree with the ZapResult of the same run."""

    def __init__(self, fields: dict):
        self.fields = fields
        text = ", ".join(f"{k}: events {a} vs result {b}" for k, (a, b) in fields.items())
        super().__init__(f"events disagree with the result: {text}")


def level_name(level: int, root_level: int | None) -> str:
    """A zap level's name: '4K', '2M', '1G', '512G', or 'root' at the root."""
    return "root" if level == root_level else LEVEL_NAMES[level]


def zap_events(
    scenario: Scenario,
    engine: str = "fast",
    cost_model: str | Path | CostModel | dict = DEFAULT_COST_MODEL,
    max_yields: int = MAX_YIELDS,
    max_operations: int = MAX_OPERATIONS,
) -> ZapEvents:
    """The events of ``scenario``'s zap on ``engine`` under ``cost_model``."""
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario must be an engine.Scenario, not {type(scenario).__name__}")
    if max_operations < 1:
        raise ScenarioError("max_operations", max_operations, "an integer >= 1")
    if len(scenario.roots) > 1:
        # One root's timeline: the events of several roots (SMM's, parallel
        # workers) would need a track each.
        raise ScenarioError(
            "smm_populated_ratio", scenario.smm_populated_ratio, "0 in a trace (one root)"
        )
    model = load_cost_model(cost_model)
    if engine == "reference":
        from .recording import record_reference

        return record_reference(scenario, model, max_operations)
    if engine == "fast":
        from .fast import record_fast

        return record_fast(scenario, model, max_yields, max_operations)
    raise ScenarioError("engine", engine, "one of ['fast', 'reference']")


def longest_first(ops: list[Operation], keep: int) -> tuple[Operation, ...]:
    """The ``keep`` longest operations, longest first; among equals the
    earliest first (an unplaced one after the placed)."""

    def key(op: Operation):
        return (-op.duration_ps, op.start_ps is None, op.start_ps or 0, op.pass_index, op.gfn)

    return tuple(sorted(ops, key=key)[:keep])


__all__ = [
    "MAX_OPERATIONS",
    "MAX_YIELDS",
    "EventsMismatch",
    "Holds",
    "Operation",
    "PassSpan",
    "SummarizedHolds",
    "ZapEvents",
    "level_name",
    "longest_first",
    "zap_events",
]
