"""The root zap: every root's strategy passes in order, each pass run by the
walk of the scenario's scheduling, on the timeline of the task that zaps it."""

from __future__ import annotations

from collections.abc import Callable

from ..cost_model import CostModel
from ..geometry import PTES_PER_TABLE
from ..result import ZapResult
from ..scenario import Scenario
from ..timeline import zap_result
from .always import run_always
from .bottom import SkipBottom
from .cache import GuestCache
from .costs import Costs
from .guest import Guest
from .never import run_never
from .tick import run_tick
from .timeline import FastTimeline
from .zap_pass import Pass

# Tables up to which a cached guest keeps its passes: 2^16 tables is about
# 128 GiB of 4K pages, and a few dozen MiB of pass arrays.
PASS_CACHE_TABLES = 1 << 16


def walk_of(scenario: Scenario):
    """``always``: every eligible check yields (closed form); a need-break
    raised every interval (need_resched under ``tick``, an honoured waiter
    for mmu_lock): the compiled tick walk; nothing: one stretch."""
    if scenario.resched == "always":
        return run_always
    return run_tick if scenario.need_break_intervals_ps else run_never


def simulate_fast(
    scenario: Scenario,
    cm: CostModel,
    guests: GuestCache | None = None,
    walk: Callable[[Pass, FastTimeline], None] | None = None,
) -> ZapResult:
    """The zap's result.  ``walk`` runs each pass on the Timeline in place of
    the scenario's walk: a trace's (``events``) records what the walk does,
    and leaves the Timeline as the walk would."""
    costs = Costs(scenario, cm)
    walk = walk or walk_of(scenario)
    timelines: list[FastTimeline] = []
    for root in scenario.roots:
        if timelines and scenario.root_zap == "serial":
            timelines[-1].next_root()
        else:
            timelines.append(FastTimeline(scenario, cm))
        guest = guests.get(root) if guests is not None else Guest.build(root)
        zap_root(guest, costs, timelines[-1], walk, keep=guests is not None)
    return zap_result(timelines, len(scenario.roots))


def zap_root(guest: Guest, costs: Costs, tl: FastTimeline, walk, keep: bool) -> None:
    """tdp_mmu_zap_root() on one root: the strategy's passes on ``tl``."""
    scenario = tl.scenario
    keep = keep and guest.tables <= PASS_CACHE_TABLES
    cleared: int | None = None
    tables = ops = 0
    for zap_level in scenario.zap_level_numbers:
        key = (zap_level, cleared, costs.key)
        p = guest.passes.get(key) or Pass(guest, costs, zap_level, cleared)
        if keep:
            guest.passes[key] = p
        walk(p, tl)
        t = p.totals
        tl.leaf_zapped += t.leaf_zapped
        tables += t.tables
        ops += t.ops
        if scenario.ad_writeback:
            tl.accessed_writebacks += t.accessed
            tl.dirty_writebacks += t.dirty
        tl.max_op_ps = max(tl.max_op_ps, p.max_op)
        tl.max_op_leaves = max(tl.max_op_leaves, p.max_op_leaves)
        if not isinstance(p.bottom, SkipBottom):
            cleared = zap_level
    tl.tables_freed += tables
    tl.ops += ops
    tl.removed_entries_scanned += PTES_PER_TABLE * tables
    # The flushes inside operations (flush_on_remove): one per removed table,
    # and with mmu_lock=read one per SPTE the walk clears.
    if scenario.flush_on_remove:
        tl.tlb_flushes += tables + (ops if scenario.mmu_lock == "read" else 0)
    # The strategy ends at the root: every present leaf is cleared once.
    for level in (1, 2, 3):
        tl.leaves_by_level[level] += guest.present_at(level)
