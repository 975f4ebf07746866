"""The ranges a sweep hands out: every combination once, interleaved, sized by time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep.run.ranges import FIRST, GROWTH, MAX_RANGES_PER_S, TAIL_S, TARGET_S, RangePlanner


def _all(planner: RangePlanner, seconds_per_combination: float = 0.0) -> list[tuple[int, int]]:
    """Every range, each completed as soon as it is handed out."""
    out = []
    while (span := planner.next_range()) is not None:
        out.append(span)
        planner.completed(span[1] - span[0], (span[1] - span[0]) * seconds_per_combination)
    return out


def _covers_once(spans: list[tuple[int, int]], total: int) -> bool:
    return [i for lo, hi in sorted(spans) for i in range(lo, hi)] == list(range(total))


def test_fixed_ranges_are_the_multiples_of_the_size_interleaved():
    spans = _all(RangePlanner(100, cpus=2, size=1))
    assert sorted(spans) == [(i, i + 1) for i in range(100)]
    first = sorted(lo for lo, _ in spans[:8])  # any prefix spreads over the whole grid
    assert first[0] <= 12 and first[-1] >= 75 and max(np.diff(first)) <= 25
    spans = _all(RangePlanner(1000, cpus=2, size=64))
    assert sorted(spans) == [(lo, min(lo + 64, 1000)) for lo in range(0, 1000, 64)]


def test_first_ranges_are_small_then_about_a_second_of_a_worker_each():
    planner = RangePlanner(10**6, cpus=2)
    first = [planner.next_range() for _ in range(4)]  # what goes out before any result
    assert all(hi - lo == FIRST for lo, hi in first)
    for lo, hi in first:
        planner.completed(hi - lo, (hi - lo) * 1e-3)  # 1 ms a combination
    sizes = []
    for _ in range(12):
        lo, hi = planner.next_range()
        sizes.append(hi - lo)
        planner.completed(hi - lo, (hi - lo) * 1e-3)
    target = int(TARGET_S / 1e-3)  # 2 s worth: 2000
    assert sizes[0] == FIRST * GROWTH  # growing at most GROWTH times a range ...
    assert all(b <= GROWTH * a for a, b in zip(sizes, sizes[1:], strict=False))
    assert sizes[-8:] == [target] * 8  # ... up to TARGET_S worth


def test_heavy_cells_make_short_ranges():
    planner = RangePlanner(10**4, cpus=2)
    lo, hi = planner.next_range()
    planner.completed(hi - lo, (hi - lo) * 0.5)  # half a second a combination
    lo, hi = planner.next_range()
    assert hi - lo == round(TARGET_S / 0.5)  # 4: TARGET_S of work


def _stretch(spans: list[tuple[int, int]], total: int, at: int) -> int:
    """The length of the stretch around ``at`` that ``spans`` leave free."""
    lo = max([hi for _, hi in spans if hi <= at], default=0)
    hi = min([lo_ for lo_, _ in spans if lo_ > at], default=total)
    return hi - lo


def test_the_tail_stops_shrinking_at_a_tenth_of_a_second():
    spans = _all(RangePlanner(10_000, cpus=2), seconds_per_combination=1e-4)
    floor = round(TAIL_S / 1e-4)  # 1000 combinations
    sizes = [hi - lo for lo, hi in spans]
    peak = sizes.index(max(sizes))  # before it, ranges grow from FIRST
    assert peak < len(spans) - 3
    for k in range(peak, len(spans)):
        lo, hi = spans[k]
        assert hi - lo >= min(floor, _stretch(spans[:k], 10_000, lo))


def test_the_last_ranges_shrink_so_the_workers_end_together():
    planner = RangePlanner(10_000, cpus=2)
    spans = _all(planner, seconds_per_combination=3.7e-4)  # the bench grid's cells
    sizes = [hi - lo for lo, hi in spans]
    left = [10_000 - sum(sizes[:k]) for k in range(len(sizes))]
    tail = int(TAIL_S / 3.7e-4)
    # never more than a 1/cpus share of what is left, or TAIL_S of work
    assert all(n <= max(FIRST, -(-m // 2), tail) for n, m in zip(sizes, left, strict=True))
    assert sizes[-1] <= tail
    assert len(spans) <= 12  # and yet few: each costs the driver about 3 ms


def test_many_cpus_make_longer_ranges_not_more():
    assert RangePlanner(10, cpus=2).target_s == TARGET_S
    assert RangePlanner(10, cpus=1000).target_s == 1000 / MAX_RANGES_PER_S


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(0, 5000),
    cpus=st.integers(1, 64),
    size=st.one_of(st.none(), st.integers(1, 300)),
    costs=st.lists(st.floats(0, 2), min_size=1, max_size=20),
)
def test_every_combination_goes_out_exactly_once(total, cpus, size, costs):
    planner = RangePlanner(total, cpus, size)
    spans, k = [], 0
    while (span := planner.next_range()) is not None:
        assert span[1] > span[0]
        assert size is None or span[1] - span[0] == min(size, total - span[0])
        spans.append(span)
        planner.completed(span[1] - span[0], costs[k % len(costs)])
        k += 1
    assert planner.left == 0
    assert _covers_once(spans, total)


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(1, 20_000),
    cpus=st.integers(1, 8),
    jitter=st.lists(st.floats(0.5, 2.0), min_size=1, max_size=20),
)
def test_cheap_cells_leave_no_sliver_ranges(total, cpus, jitter):
    """Cells cheap enough that time allows large ranges: no range but the
    probes is smaller than FIRST, unless it is all that was left."""
    planner = RangePlanner(total, cpus)
    spans, k = [], 0
    while (span := planner.next_range()) is not None:
        spans.append(span)
        n = span[1] - span[0]
        planner.completed(n, n * 1e-4 * jitter[k % len(jitter)])
        k += 1
    for lo, hi in spans:
        assert hi - lo >= FIRST or hi - lo == total or (lo, hi) == spans[-1], spans
