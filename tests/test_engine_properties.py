"""Property tests of the zap engine over small random scenarios and layouts.

Every expected count is taken from the page table as built
(``engine.reference.build_page_table``), or from the mapping-level rule
applied GFN by GFN with the population draw (``built_from_rule``), never
from the result under test.

Guests stay small (a few MiB of 4K pages, a few GiB of 2M pages, about a TiB
of 1G pages; memslot lists of 2 to 4 slots of a few GiB at most, with
unaligned edges, mixed backing page sizes, partial population and splits)
so the reference engine runs each example in milliseconds.
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
from engine.population import (
    ACCESSED,
    DIRTY,
    NONPRESENT,
    run_codes,
    run_counts,
    run_key,
    split_mask,
)
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
LEVELS = {"4K": 1, "2M": 2, "1G": 3}
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
    by_level: tuple[int, int, int]  # present leaves at 4K, 2M, 1G


def built_from_table(scenario: Scenario) -> Built:
    """Walk the explicit page table and count what is in it."""
    present = accessed = dirty = tables = 0
    by_level = [0, 0, 0, 0]
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
                by_level[table.level] += 1
    return Built(present, accessed, dirty, tables, tuple(by_level[1:]))


def mappings(start: int, end: int, backing: int) -> dict[int, np.ndarray]:
    """First GFN of every mapping of the GFNs [start, end) per level, by the
    rule applied to each GFN: the largest level, up to the backing page,
    whose aligned range around the GFN lies in [start, end).  GFN by GFN
    for slots of up to a few GiB; a slot aligned to its backing page is
    mapped by whole backing pages."""
    span = 512 ** (backing - 1)
    if start % span == 0 and end % span == 0:
        return {backing: np.arange(start, end, span)}
    assert end - start <= 1 << 21, "a slot this large is not mapped GFN by GFN"
    gfn = np.arange(start, end, dtype=np.int64)
    level = np.ones(len(gfn), dtype=np.int64)
    for lv in range(2, backing + 1):
        span = 512 ** (lv - 1)
        first = gfn & -span
        level[(first >= start) & (first + span <= end)] = lv
    return {lv: gfn[(level == lv) & (gfn % 512 ** (lv - 1) == 0)] for lv in range(1, backing + 1)}


def built_from_rule(scenario: Scenario) -> Built:
    """The same counts from the mapping-level rule, the seed's splits and the
    population draw: a table exists when it holds a present leaf or a table
    below it does."""
    seed = scenario.seed
    present = accessed = dirty = 0
    by_level = [0, 0, 0, 0]
    holding: set[tuple[int, int]] = set()  # (level, table) holding a present leaf
    for s, slot in enumerate(scenario.slots):
        backing = LEVELS[slot.page_size]
        maps = mappings(slot.base_gfn, slot.base_gfn + slot.npages, backing)
        runs: dict[tuple[int, int], set[int]] = {}  # (level, table) -> entries
        split: set[tuple[int, int]] = set()
        for lv, first in maps.items():
            entries = first // 512 ** (lv - 1)
            for e in entries.tolist():
                runs.setdefault((lv, e // 512), set()).add(e % 512)
            if lv > 1:
                for e in entries[split_mask(seed, lv, entries, slot.split_ratio)].tolist():
                    split.add((lv, e))
                    pages = 512 ** (lv - 1)
                    for t in range(e * pages // 512, (e + 1) * pages // 512):
                        runs.setdefault((1, t), set()).update(range(512))
        ratios = (slot.populated_ratio, slot.accessed_ratio, slot.dirty_ratio)
        for (lv, t), entries in runs.items():
            lo, hi = min(entries), max(entries) + 1
            assert len(entries) == hi - lo
            key = int(run_key(t, s, lv, backing))
            c = run_counts(seed, np.array([key], dtype=np.uint64), np.array([hi - lo]), ratios)
            codes = run_codes(seed, key, lo, hi, (c.present[0], c.accessed[0], c.dirty[0]))
            for i, code in zip(range(lo, hi), codes.tolist(), strict=True):
                if code == NONPRESENT or (lv, t * 512 + i) in split:
                    continue
                present += 1
                accessed += (code & ACCESSED) == ACCESSED
                dirty += code == DIRTY
                by_level[lv] += 1
                holding.add((lv, t))
    tables = set()
    for lv, t in holding:
        for up in range(lv, scenario.root_level):
            tables.add((up, t >> (9 * (up - lv))))
    return Built(present, accessed, dirty, len(tables), tuple(by_level[1:]))


@dataclass(frozen=True)
class Walk:
    """What the passes of a strategy must do to the built table, counted
    from the table alone (spec sections 3 and 4)."""

    visits_without_yields: int
    ops: int
    max_op_leaves: int


def leaves_under(table: Table, above: int) -> int:
    """Present leaves in ``table``'s subtree held by tables above level ``above``."""
    return sum(
        leaves_under(spte, above)
        if isinstance(spte, Table)
        else (spte != NONPRESENT and table.level > above)
        for spte in table.sptes
    )


def expected_walk(scenario: Scenario) -> Walk:
    """A pass at zap level Z visits every entry below ``end`` of every table
    at a level >= Z (earlier, lower passes only empty tables below Z, they
    remove none at or above it) and clears each present SPTE at level Z: one
    operation, clearing the leaves under it that no earlier pass cleared
    (those held by tables above the previous pass's level)."""
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
                if isinstance(spte, Table):
                    max_leaves = max(max_leaves, leaves_under(spte, previous))
                else:
                    max_leaves = max(max_leaves, 1)
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


KIB4, MIB2, GIB1 = 1 << 12, 1 << 21, 1 << 30


@st.composite
def memslot_lists(draw, split_1g: bool = True) -> list[dict]:
    """2 to 4 slots by GPA: unaligned edges (sizes and gaps that are not
    multiples of the backing page, two slots meeting inside one table),
    mixed backing page sizes, partial population, split ratios in [0, 1].
    A slot may leave its page size and ratios to the scenario.  Splitting a
    whole 1G page costs the reference engine 262,144 4K pages to build and
    walk (seconds under ``always``): at most one list in three does, mostly
    sparsely populated, and none unless ``split_1g``."""
    big = split_1g and draw(st.integers(0, 2)) == 0
    gpa = draw(st.sampled_from([0, 0, 1, 255, 256, 512, 262_143])) * KIB4
    slots = []
    for _ in range(draw(st.integers(2, 4))):
        page_size = draw(st.sampled_from(["4K", "2M", "1G"]))
        split = draw(st.sampled_from([0.0, 0.0, 1.0, 0.5, 0.05]))
        populated = draw(st.sampled_from([1.0, 1.0, 0.7, 0.1, 0.0]))
        gigs = 0
        if page_size == "1G":
            if draw(st.booleans()):  # room for whole 1G pages: start on a 1G boundary
                gpa = -(-gpa // GIB1) * GIB1 + draw(st.sampled_from([0, 0, KIB4, MIB2]))
            gigs = draw(st.sampled_from([0, 1, 1, 2]))
            if gigs and split:
                if big:  # one whole 1G page to split: on a 1G boundary
                    big, gigs, split = False, 1, draw(st.sampled_from([1.0, 0.5]))
                    gpa = -(-gpa // GIB1) * GIB1
                    populated = draw(st.sampled_from([0.0005, 0.002, 0.002, 1.0]))
                else:
                    split = 0.0
        size = (
            gigs * GIB1
            + draw(st.integers(0, 6 if page_size == "2M" else 3)) * MIB2 * (page_size != "4K")
            + draw(st.integers(0, 700)) * KIB4
        )
        accessed = draw(st.sampled_from([0.0, 0.5, 1.0]))
        slot = {
            "gpa": gpa,
            "size": max(size, KIB4),
            "page_size": page_size,
            "populated_ratio": populated,
            "accessed_ratio": accessed,
            "dirty_ratio": accessed * draw(st.sampled_from([0.0, 0.5, 1.0])),
            "split_ratio": split,
        }
        for name in ("accessed_ratio", "split_ratio", "populated_ratio"):
            if draw(st.integers(0, 7)) == 0 and not (gigs and split):
                del slot[name]  # the scenario's value, then
        if "accessed_ratio" not in slot:
            del slot["dirty_ratio"]  # both or neither: dirty <= accessed in each slot
        if page_size == "4K" and draw(st.integers(0, 3)) == 0:
            del slot["page_size"]  # the scenario's, then (a few MiB at most)
        slots.append(slot)
        gap = draw(st.sampled_from([0, 0, 1, 37, 256, 511, 513, 262_144, 262_144 * 512 - 300]))
        gpa += slot["size"] + gap * KIB4
    order = draw(st.permutations(range(len(slots))))
    return [slots[i] for i in order]


def memory_top(kw: dict) -> int:
    if kw.get("memslots"):
        return max(s["gpa"] + s["size"] for s in kw["memslots"])
    memory = kw["guest_memory"]
    if kw.get("layout") == "q35" and memory >= 0xB0000000:
        return (1 << 32) + memory - (1 << 31)
    return memory


@st.composite
def layout_kwargs(draw, page_size: str, form: str | None = None, split_1g: bool = True) -> dict:
    """The memory layout: flat (Part I), q35, or a memslot list; whole 1G
    pages split to 4K only if ``split_1g``."""
    form = form or draw(st.sampled_from(["flat", "flat", "q35", "memslots"]))
    if form == "memslots":
        return {"memslots": draw(memslot_lists(split_1g))}
    pages = draw(st.integers(1, MAX_PAGES[page_size]))
    kw = {"guest_memory": pages * PAGE_BYTES[page_size]}
    if form == "q35":
        kw["layout"] = "q35"
        page = PAGE_BYTES[page_size]  # more than the 1 MiB below the low slot's start
        kw["guest_memory"] = max(kw["guest_memory"], ((1 << 20) // page + 1) * page)
    if page_size != "4K" and draw(st.booleans()):
        # Split huge pages: few of them, a 1G one rarely (262,144 4K pages).
        small = {"2M": 64 << 20, "1G": 2 << 30}[page_size]
        if page_size == "2M" or (split_1g and draw(st.integers(0, 15)) == 0):
            kw["guest_memory"] = min(kw["guest_memory"], small)
            kw["split_ratio"] = draw(st.sampled_from([1.0, 0.5, 0.1]) | st.floats(0.0, 1.0))
    return kw


@st.composite
def scenario_kwargs(draw, resched=None, form=None, split_1g=True) -> dict:
    """Every option of a scenario, over a layout of ``form`` (flat, q35,
    memslots; any when None), with whole 1G pages split to 4K if ``split_1g``."""
    paging_levels = draw(st.sampled_from([4, 5]))
    page_size = draw(st.sampled_from(["4K", "2M", "1G"]))
    layout = draw(layout_kwargs(page_size, form, split_1g))
    min_bits = max(32, math.ceil(math.log2(memory_top(layout))))
    accessed = draw(ratios)
    dirty = draw(st.floats(0.0, accessed)) if accessed > 0 else 0.0
    policy = resched or draw(st.sampled_from(["always", "never", "tick"]))
    return {
        "paging_levels": paging_levels,
        "page_size": page_size,
        **layout,
        "populated_ratio": draw(ratios),
        "accessed_ratio": accessed,
        "dirty_ratio": dirty,
        "zap_levels": draw(zap_levels(paging_levels)),
        "vcpus": draw(st.integers(1, 64)),
        "host_phys_bits": draw(
            st.one_of(st.none(), st.integers(min_bits, 52))
            if min_bits <= 46
            else st.integers(min_bits, 52)
        ),
        "resched": policy,
        "resched_interval_us": draw(st.sampled_from(INTERVALS_US)),
        "mmu_lock": draw(st.sampled_from(["write", "read"])),
        "flush_on_yield": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32)),
    }


scenarios = scenario_kwargs().map(lambda kw: Scenario(**kw))
memslot_scenarios = scenario_kwargs(form="memslots").map(lambda kw: Scenario(**kw))
# Each read once: parsing the YAML costs more than simulating most of these guests.
cost_models = st.sampled_from([load_cost_model(m) for m in available_cost_models() + [ODD_COSTS]])


# -- properties -----------------------------------------------------------------


@PROFILE
@given(scenario=scenarios)
def test_built_table_matches_the_rule_and_the_draw(scenario: Scenario) -> None:
    """The explicit table holds exactly what the mapping-level rule, the
    splits and the population draw say, level by level."""
    built = built_from_table(scenario)
    assert built == built_from_rule(scenario)
    assert built.dirty <= built.accessed <= built.present_leaves == sum(built.by_level)
    populated = {slot.populated_ratio for slot in scenario.slots}
    if populated == {0.0}:
        assert built == Built(0, 0, 0, 0, (0, 0, 0))
    if populated == {1.0} and not any(slot.split_ratio for slot in scenario.slots):
        # Every GFN of every slot is mapped, by leaves of the rule's levels.
        pages = {
            lv: sum(
                len(mappings(s.base_gfn, s.base_gfn + s.npages, LEVELS[s.page_size]).get(lv, ()))
                for s in scenario.slots
            )
            for lv in (1, 2, 3)
        }
        assert built.by_level == (pages[1], pages[2], pages[3])


@PROFILE
@given(scenario=scenarios, cost_model=cost_models)
def test_zap_clears_exactly_what_was_built(scenario: Scenario, cost_model) -> None:
    assert_clears_what_was_built(scenario, cost_model)


@settings(PROFILE, max_examples=max(PROFILE.max_examples, 100))
@given(scenario=memslot_scenarios, cost_model=cost_models)
def test_zap_clears_exactly_what_was_built_on_memslot_layouts(scenario, cost_model) -> None:
    """The table and the zap on slot lists alone (tables mixing leaves and
    child tables, leaves at three levels, slots meeting inside one table)."""
    built = built_from_table(scenario)
    assert built == built_from_rule(scenario)
    assert_clears_what_was_built(scenario, cost_model, built)


def assert_clears_what_was_built(scenario: Scenario, cost_model, built=None) -> None:
    built = built or built_from_table(scenario)
    r = simulate(scenario, engine=ENGINE, cost_model=cost_model)
    event(f"resched={scenario.resched} yields>0={r.yields > 0}")

    assert r.leaf_zapped == built.present_leaves
    assert (r.leaves_4k, r.leaves_2m, r.leaves_1g) == built.by_level
    assert r.leaf_zapped == r.leaves_4k + r.leaves_2m + r.leaves_1g
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
@given(scenario=scenario_kwargs(split_1g=False).map(lambda kw: Scenario(**kw)))
def test_same_scenario_twice_gives_identical_results(scenario: Scenario) -> None:
    """Guests up to a few GiB (no whole 1G page split to 4K): size is not what
    could make a run differ from the next."""
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
    # Per leaf run the dirty count only grows (binomial inverted at one uniform).
    b_lo, b_hi = built_from_table(s_lo), built_from_table(s_hi)
    assert (b_lo.present_leaves, b_lo.accessed, b_lo.nonroot_tables, b_lo.by_level) == (
        b_hi.present_leaves,
        b_hi.accessed,
        b_hi.nonroot_tables,
        b_hi.by_level,
    )
    assert b_hi.dirty >= b_lo.dirty

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
