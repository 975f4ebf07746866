"""The pieces of the engines' walks that the differential test reaches only
indirectly: the compiled tick loop's copy of the rank map and its prefix
counts, and the reference walk's visit budget."""

from __future__ import annotations

import numpy as np
import pytest

from engine import COST_FIELDS, Scenario, simulate
from engine import population as P
from engine.fast import tick_kernel as K
from engine.reference import TdpIter, WalkError


@pytest.mark.parametrize("seed", [0, 1, 2**40 + 17, 2**63 - 1])
@pytest.mark.parametrize("slot, level, backing", [(0, 1, 1), (0, 1, 3), (2, 2, 3), (32763, 1, 2)])
def test_compiled_rank_map_equals_the_population_draw(seed, slot, level, backing):
    tables = np.array([0, 1, 2, 511, 512, 123_456, 8_388_607, 2**31 - 1], dtype=np.int64)
    keys = P.run_key(tables, slot, level, backing)
    midx, add = P.rank_map_key(seed, keys)
    stream = P.rank_map_stream_key(seed)
    salt = P.run_key(0, slot, level, backing)
    for t, m, a in zip(tables, midx, add, strict=True):
        # The kernel salts a table index as population.run_key does.
        assert K._rank_map(stream, np.uint64(t) ^ salt) == (m, a)


def test_compiled_prefix_counts_equal_counting_the_ranks():
    counts = P.rank_counts()
    rng = np.random.default_rng(1)
    for _ in range(300):
        m, add = int(rng.integers(16)), int(rng.integers(512))
        j, threshold = int(rng.integers(513)), int(rng.choice([0, 1, 255, 511, 512]))
        ranks = (P.RANK_MULTIPLIERS[m] * np.arange(j) + add) % 512
        assert K._ranked_below(counts, m, add, j, threshold) == (ranks < threshold).sum()


def test_a_walk_that_does_not_end_fails_at_its_visit_budget(monkeypatch):
    """A step side that never moves (so the walk revisits one SPTE forever)
    is stopped by the budget the table allows, not by a timeout."""
    monkeypatch.setattr(TdpIter, "step_side", lambda self: True)
    with pytest.raises(WalkError, match="does not end"):
        simulate(Scenario(guest_memory="4MiB", resched="always"), "reference")


# A yield at a step-down visit.  tdp_mmu_iter_cond_resched() yields whenever
# the walk made progress since the last yield (next_last_level_gfn !=
# yielded_gfn), so the visit after a step side that did not yield may yield
# even though the iterator stepped down to reach it.
#
# A fully populated 4K guest of 4 MiB (two level-1 tables), `4K,root`, costs
# of 1 us per visit and nothing else, ticks every 516.5 us.  Without yields the
# 4K pass checks visit v at v us: v1 root entry 0, v2 the level-3 entry, v3
# level-2 entry 0, v4-v515 the first level-1 table, v516 level-2 entry 1 (a
# step side), v517-v1028 the second level-1 table, v1029-v1538 level-2
# entries 2-511, v1539-v2049 level-3 entries 1-511, v2050-v2176 root entries
# 1-127.  The first tick is seen at v517, entry 0 of the second table, which
# the walk reached by a step down: it yields there (hold 0-517 us); the restart
# walks down 3 ancestors and visits it again (checks now at v + 4).  The second
# tick (1033 us) is seen at v1029 (+3 visits), the third (1549.5 us) at v1543
# (+2), the fourth (2066 us) at v2057 (+1).  The root pass's 128 visits end at
# 2186 + 128 = 2314 us, before the fifth tick.  Holds: 517, 516, 517, 516 and
# 248 us.  Waiting for the next step side would yield at v518: a first hold
# of 518 us.
VISITS_ONLY = {"name": "visits-only", "costs": {f: 0 for f in COST_FIELDS} | {"visit_ns": 1000}}


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_a_step_down_visit_yields_after_progress(engine):
    s = Scenario(
        guest_memory="4MiB",
        accessed_ratio=0,
        dirty_ratio=0,
        zap_levels="4K,root",
        resched="tick",
        resched_interval_us=516.5,
    )
    r = simulate(s, engine, VISITS_ONLY)
    assert (r.visits, r.yields, r.max_rcu_hold_ns, r.total_ns) == (2314, 4, 517_000, 2_314_000)
