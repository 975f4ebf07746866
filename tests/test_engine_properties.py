"""Property tests of the zap engine over small random scenarios.

Every expected count is taken from the page table as built
(``engine.reference.build_page_table``) or from the population draw
(``engine.population.leaf_table_counts``), never from the result under test.

Guests stay small (a few MiB of 4K pages, a few GiB of 2M pages, about a TiB
of 1G pages) so the reference engine runs each example in milliseconds.
``ZAPSWEEP_TEST_ENGINE`` picks the engine (default ``reference``);
``ZAPSWEEP_HYPOTHESIS_EXAMPLES`` the number of examples per property.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from engine import (
    COST_FIELDS,
    Scenario,
    available_cost_models,
    event_counts,
    load_cost_model,
    simulate,
    total_ps,
)
from engine.population import ACCESSED, DIRTY, NONPRESENT, leaf_table_counts
from engine.reference import Table, build_page_table

ENGINE = os.environ.get("ZAPSWEEP_TEST_ENGINE", "reference")

settings.register_profile(
    "zapsweep-engine",
    deadline=None,
    max_examples=int(os.environ.get("ZAPSWEEP_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = settings.get_profile("zapsweep-engine")

LEVEL_NAMES = {1: "4K", 2: "2M", 3: "1G", 4: "512G"}
PAGE_BYTES = {"4K": 1 << 12, "2M": 1 << 21, "1G": 1 << 30}
# Most leaves per page size: 6 MiB of 4K pages, 4 GiB of 2M pages, 1.1 TiB of
# 1G pages (three 512 GiB root entries with 4-level paging).
MAX_PAGES = {"4K": 1536, "2M": 2048, "1G": 1100}
# Tick intervals from well below one yield (every eligible check yields) to
# longer than most of these zaps (a few yields or none).
INTERVALS_US = (0.01, 0.05, 0.2, 1.0, 3.0, 10.0, 40.0, 200.0)

# Costs every example is also checked under: none equals seed-2022's.
ODD_COSTS = {
    "name": "odd",
    "costs": dict(zip(COST_FIELDS, (7, 3.5, 1, 11, 13, 17, 19.25, 23, 29, 31), strict=True)),
}


# -- what was built -------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """Counts of the page table a scenario builds."""

    present_leaves: int
    accessed: int
    dirty: int
    nonroot_tables: int


def built_from_table(scenario: Scenario) -> Built:
    """Walk the explicit page table and count what is in it."""
    present = accessed = dirty = tables = 0
    stack = [build_page_table(scenario)]
    while stack:
        table = stack.pop()
        for spte in table.sptes:
            if isinstance(spte, Table):
                tables += 1
                stack.append(spte)
            elif spte != NONPRESENT:
                present += 1
                accessed += (spte & ACCESSED) == ACCESSED
                dirty += spte == DIRTY
    return Built(present, accessed, dirty, tables)


def built_from_population(scenario: Scenario) -> Built:
    """The same counts from the population draw: a leaf table exists when it
    holds a present leaf, an upper table when a table below it exists."""
    counts = leaf_table_counts(scenario)
    nonempty = np.flatnonzero(counts.present > 0)
    tables = sum(
        len(np.unique(nonempty >> (9 * k)))
        for k in range(scenario.root_level - scenario.leaf_level)
    )
    return Built(
        int(counts.present.sum()), int(counts.accessed.sum()), int(counts.dirty.sum()), tables
    )


@dataclass(frozen=True)
class Walk:
    """What the passes of a strategy must do to the built table, counted
    from the table alone (spec sections 3 and 4)."""

    visits_without_yields: int
    ops: int
    max_op_leaves: int


def leaves_under(table: Table) -> int:
    return sum(
        leaves_under(spte) if isinstance(spte, Table) else spte != NONPRESENT
        for spte in table.sptes
    )


def expected_walk(scenario: Scenario) -> Walk:
    """A pass at zap level Z visits every entry below ``end`` of every table
    at a level >= Z (earlier, lower passes only empty tables below Z, they
    remove none at or above it) and clears each present SPTE at level Z: one
    operation, clearing the leaves under it that no earlier pass cleared."""
    tables: list[tuple[int, int, Table]] = []
    stack = [(scenario.root_level, 0, build_page_table(scenario))]
    while stack:
        level, base, table = stack.pop()
        tables.append((level, base, table))
        span = 512 ** (level - 1)
        for i, spte in enumerate(table.sptes):
            if isinstance(spte, Table):
                stack.append((level - 1, base + i * span, spte))
    visits = ops = max_leaves = 0
    previous = 0  # zap level of the previous pass
    for zap in scenario.zap_level_numbers:
        for level, base, table in tables:
            if level < zap:
                continue
            span = 512 ** (level - 1)
            below_end = min(512, -(-(scenario.end_gfn - base) // span))
            visits += below_end
            if level != zap:
                continue
            for spte in table.sptes[:below_end]:
                if spte == NONPRESENT:
                    continue
                ops += 1
                if scenario.leaf_level > previous:  # its leaves are still there
                    max_leaves = max(
                        max_leaves, leaves_under(spte) if isinstance(spte, Table) else 1
                    )
        previous = zap
    return Walk(visits, ops, max_leaves)


# -- scenarios ------------------------------------------------------------------

ratios = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


@st.composite
def zap_levels(draw, paging_levels: int):
    """Every form a strategy can be given in: a name, or an ascending list of
    levels below the root ending at the root, as names, numbers or a string."""
    form = draw(st.sampled_from(["named", "names", "numbers", "string"]))
    if form == "named":
        return draw(st.sampled_from(["root", "two_pass", "per_level", "upstream"]))
    below = draw(st.sets(st.integers(1, paging_levels - 1)))
    levels = sorted(below)
    if form == "numbers":
        return tuple(levels) + (paging_levels,)
    names = [LEVEL_NAMES[lv] for lv in levels] + ["root"]
    return ",".join(names) if form == "string" else tuple(names)


@st.composite
def scenario_kwargs(draw, resched=None) -> dict:
    paging_levels = draw(st.sampled_from([4, 5]))
    page_size = draw(st.sampled_from(["4K", "2M", "1G"]))
    pages = draw(st.integers(1, MAX_PAGES[page_size]))
    guest_memory = pages * PAGE_BYTES[page_size]
    min_bits = max(32, math.ceil(math.log2(guest_memory)))
    accessed = draw(ratios)
    dirty = draw(st.floats(0.0, accessed)) if accessed > 0 else 0.0
    policy = resched or draw(st.sampled_from(["always", "never", "tick"]))
    return {
        "paging_levels": paging_levels,
        "guest_memory": guest_memory,
        "page_size": page_size,
        "populated_ratio": draw(ratios),
        "accessed_ratio": accessed,
        "dirty_ratio": dirty,
        "zap_levels": draw(zap_levels(paging_levels)),
        "vcpus": draw(st.integers(1, 64)),
        "host_phys_bits": draw(st.one_of(st.none(), st.integers(min_bits, 52))),
        "resched": policy,
        "resched_interval_us": draw(st.sampled_from(INTERVALS_US)),
        "mmu_lock": draw(st.sampled_from(["write", "read"])),
        "flush_on_yield": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32)),
    }


scenarios = scenario_kwargs().map(lambda kw: Scenario(**kw))
cost_models = st.sampled_from(available_cost_models() + [ODD_COSTS])


# -- properties -----------------------------------------------------------------


@PROFILE
@given(scenario=scenarios)
def test_built_table_matches_population_counts(scenario: Scenario) -> None:
    """The explicit table holds exactly what the population draw says."""
    built = built_from_table(scenario)
    assert built == built_from_population(scenario)
    assert built.dirty <= built.accessed <= built.present_leaves <= scenario.guest_pages
    if scenario.populated_ratio == 1.0:
        assert built.present_leaves == scenario.guest_pages
    if scenario.populated_ratio == 0.0:
        assert built == Built(0, 0, 0, 0)


@PROFILE
@given(scenario=scenarios, cost_model=cost_models)
def test_zap_clears_exactly_what_was_built(scenario: Scenario, cost_model) -> None:
    built = built_from_table(scenario)
    r = simulate(scenario, engine=ENGINE, cost_model=cost_model)
    event(f"resched={scenario.resched} yields>0={r.yields > 0}")

    assert r.leaf_zapped == built.present_leaves
    assert r.tables_freed == built.nonroot_tables
    assert r.removed_entries_scanned == 512 * r.tables_freed
    assert r.accessed_writebacks == built.accessed
    assert r.dirty_writebacks == built.dirty
    assert r.max_rcu_hold_ns >= r.max_op_ns
    assert r.total_ns >= r.max_rcu_hold_ns
    assert 0 <= r.max_op_leaves <= r.leaf_zapped
    assert r.pending_free_peak_bytes <= 4096 * r.tables_freed
    if scenario.resched == "never":
        assert r.yields == 0
    if not scenario.flush_on_yield:
        assert r.tlb_flushes == 0
    assert r.tlb_flushes <= r.yields
    model = load_cost_model(cost_model)
    assert total_ps(event_counts(r, scenario), model) // 1000 == r.total_ns


@PROFILE
@given(scenario=scenarios)
def test_walk_visits_and_operations_match_the_table(scenario: Scenario) -> None:
    """Visits without yields, operations and the largest operation follow
    from the table; each yield adds the yielding visit and the restart's
    walk down (1 to paging_levels visits)."""
    walk = expected_walk(scenario)
    r = simulate(scenario, engine=ENGINE)
    assert r.ops == walk.ops
    assert r.max_op_leaves == walk.max_op_leaves
    if scenario.resched == "never":
        assert r.visits == walk.visits_without_yields
    extra = r.visits - walk.visits_without_yields
    assert r.yields <= extra <= r.yields * scenario.paging_levels


@PROFILE
@given(scenario=scenarios)
def test_same_scenario_twice_gives_identical_results(scenario: Scenario) -> None:
    first = simulate(scenario, engine=ENGINE)
    again = simulate(Scenario(**scenario.to_dict()), engine=ENGINE)
    assert again == first
    assert again.to_dict() == first.to_dict()


# Costs that do not depend on when the zap yields: which SPTEs are cleared,
# where, and what they write back is fixed by the table alone.
SCHEDULE_FREE = (
    "spte_clear_ns",
    "nonpresent_entry_ns",
    "accessed_writeback_ns",
    "dirty_writeback_ns",
    "removed_table_ns",
    "atomic_write_ns",
)


@st.composite
def dirty_pairs(draw, resched=None):
    """A scenario's fields and two dirty ratios d_lo <= d_hi <= accessed_ratio."""
    kw = draw(scenario_kwargs(resched=resched))
    a = kw["accessed_ratio"]
    lo, hi = sorted([draw(st.floats(0.0, a)), draw(st.floats(0.0, a))])
    return kw, lo, hi


@PROFILE
@given(pair=dirty_pairs(), cost_model=cost_models)
def test_larger_dirty_ratio_never_lowers_time(pair, cost_model) -> None:
    """Same seed: a larger dirty_ratio only adds dirty bits to the same table.

    Under ``always`` and ``never`` the schedule does not depend on time, so
    total_ns cannot fall.  Under ``tick`` the yields move with the clock and
    total_ns can fall (see test_tick_yield_can_absorb_a_tick below); what
    holds there is that the work not tied to the schedule never falls.
    """
    kw, lo, hi = pair
    s_lo, s_hi = Scenario(**{**kw, "dirty_ratio": lo}), Scenario(**{**kw, "dirty_ratio": hi})
    # Per leaf table the dirty count only grows (binomial inverted at one uniform).
    c_lo, c_hi = leaf_table_counts(s_lo), leaf_table_counts(s_hi)
    assert np.array_equal(c_lo.present, c_hi.present)
    assert np.array_equal(c_lo.accessed, c_hi.accessed)
    assert np.all(c_hi.dirty >= c_lo.dirty)

    r_lo = simulate(s_lo, engine=ENGINE, cost_model=cost_model)
    r_hi = simulate(s_hi, engine=ENGINE, cost_model=cost_model)
    assert r_hi.dirty_writebacks >= r_lo.dirty_writebacks
    for same in ("leaf_zapped", "tables_freed", "removed_entries_scanned", "accessed_writebacks"):
        assert getattr(r_hi, same) == getattr(r_lo, same)
    model = load_cost_model(cost_model)
    work_lo, work_hi = event_counts(r_lo, s_lo), event_counts(r_hi, s_hi)
    assert total_ps({k: work_hi[k] for k in SCHEDULE_FREE}, model) >= total_ps(
        {k: work_lo[k] for k in SCHEDULE_FREE}, model
    )
    if kw["resched"] in ("always", "never"):
        assert (r_hi.visits, r_hi.yields, r_hi.tlb_flushes) == (
            r_lo.visits,
            r_lo.yields,
            r_lo.tlb_flushes,
        )
        assert r_hi.total_ns >= r_lo.total_ns


# A genuine counterexample to "a larger dirty_ratio never lowers total_ns"
# under resched=tick, with costs fixed here so a recalibration cannot move it.
# dirty 0.2 -> 0.3 adds 100 dirty leaves (+2000 ns of write-back) and moves
# the second yield from 47.32 us to 49.32 us; that yield then ends at 51.32 us,
# past the 50 us tick, which it clears, so the zap yields 4 times instead of 5
# and finishes 45 ns sooner (77046 ns -> 77001 ns).
COUNTER_COSTS = {
    "name": "counterexample",
    "costs": {
        "visit_ns": 15,
        "spte_clear_ns": 10,
        "nonpresent_entry_ns": 2,
        "accessed_writeback_ns": 30,
        "dirty_writeback_ns": 20,
        "removed_table_ns": 200,
        "atomic_write_ns": 5,
        "yield_ns": 2000,
        "flush_base_ns": 2000,
        "flush_per_vcpu_ns": 500,
    },
}
COUNTER = {
    "guest_memory": "4MiB",
    "page_size": "4K",
    "accessed_ratio": 1.0,
    "zap_levels": "2M,root",
    "resched": "tick",
    "resched_interval_us": 10,
    "seed": 0,
}


@pytest.mark.xfail(
    strict=True,
    reason="the spec's 'a larger dirty_ratio never lowers total_ns' does not hold under "
    "resched=tick: a yield that ends past a tick clears it (the README's model notes say so)",
)
def test_tick_larger_dirty_ratio_never_lowers_total_ns() -> None:
    r_lo = simulate(Scenario(**COUNTER, dirty_ratio=0.2), engine=ENGINE, cost_model=COUNTER_COSTS)
    r_hi = simulate(Scenario(**COUNTER, dirty_ratio=0.3), engine=ENGINE, cost_model=COUNTER_COSTS)
    assert r_hi.total_ns >= r_lo.total_ns


def test_tick_yield_can_absorb_a_tick() -> None:
    """The counterexample above, pinned: it is the model working as specified."""
    r_lo = simulate(Scenario(**COUNTER, dirty_ratio=0.2), engine=ENGINE, cost_model=COUNTER_COSTS)
    r_hi = simulate(Scenario(**COUNTER, dirty_ratio=0.3), engine=ENGINE, cost_model=COUNTER_COSTS)
    assert (r_lo.dirty_writebacks, r_hi.dirty_writebacks) == (191, 291)
    assert (r_lo.yields, r_hi.yields) == (5, 4)
    assert (r_lo.total_ns, r_hi.total_ns) == (77046, 77001)


# -- the generators reach what they claim to ------------------------------------


@pytest.mark.parametrize("interval", [0.2, 3.0])
def test_tick_with_small_interval_really_yields(interval) -> None:
    """The tick intervals drawn above make a small zap yield, so the
    properties are exercised with yields and restarts, not only without."""
    s = Scenario(
        guest_memory="2MiB", zap_levels="per_level", resched="tick", resched_interval_us=interval
    )
    r = simulate(s, engine=ENGINE)
    assert r.yields > 0
    assert r.leaf_zapped == 512


@PROFILE
@given(kw=scenario_kwargs(resched="tick"))
def test_tick_yields_at_most_once_per_interval_plus_visits(kw) -> None:
    """Under tick, a yield needs a tick since the last yield: at most one per
    interval of zap time (yields themselves take time, so this is loose)."""
    s = Scenario(**kw)
    r = simulate(s, engine=ENGINE)
    assume(r.total_ns > 0)
    assert r.yields <= r.total_ns / (1000 * s.resched_interval_us) + 1
    assert r.yields < max(r.visits, 1)
