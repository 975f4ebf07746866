"""The root zap: a strategy's passes in order on one Timeline, each run by
the walk of the scenario's ``resched`` policy."""

from __future__ import annotations

from ..cost_model import CostModel
from ..geometry import PTES_PER_TABLE
from ..result import ZapResult
from ..scenario import Scenario
from .always import run_always
from .bottom import SkipBottom
from .cache import GuestCache
from .costs import Costs
from .guest import Guest
from .never import run_never
from .tick import run_tick
from .timeline import FastTimeline
from .zap_pass import Pass

WALKS = {"never": run_never, "always": run_always, "tick": run_tick}

# Tables up to which a cached guest keeps its passes: 2^16 tables is about
# 128 GiB of 4K pages, and a few dozen MiB of pass arrays.
PASS_CACHE_TABLES = 1 << 16


def simulate_fast(scenario: Scenario, cm: CostModel, guests: GuestCache | None = None) -> ZapResult:
    guest = guests.get(scenario) if guests is not None else Guest.build(scenario)
    costs = Costs(scenario, cm)
    tl = FastTimeline(scenario, cm)
    walk = WALKS[scenario.resched]
    keep = guests is not None and guest.tables <= PASS_CACHE_TABLES
    cleared: int | None = None
    for zap_level in scenario.zap_level_numbers:
        key = (zap_level, cleared, costs.key)
        p = guest.passes.get(key) or Pass(guest, costs, zap_level, cleared)
        if keep:
            guest.passes[key] = p
        walk(p, tl)
        t = p.totals
        tl.leaf_zapped += t.leaf_zapped
        tl.tables_freed += t.tables
        tl.accessed_writebacks += t.accessed
        tl.dirty_writebacks += t.dirty
        tl.ops += t.ops
        tl.max_op_ps = max(tl.max_op_ps, p.max_op)
        tl.max_op_leaves = max(tl.max_op_leaves, p.max_op_leaves)
        if not isinstance(p.bottom, SkipBottom):
            cleared = zap_level
    tl.removed_entries_scanned = PTES_PER_TABLE * tl.tables_freed
    # The strategy ends at the root: every present leaf is cleared once.
    tl.leaves_by_level = [0, *(guest.present_at(level) for level in (1, 2, 3))]
    return tl.result()
