"""The pieces of the engines' walks that the differential test reaches only
indirectly: the compiled tick loop's copy of the rank map and its prefix
counts, and the reference walk's visit budget."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Scenario, simulate
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
