"""The fast engine equals the reference engine, field by field, and its walk
counts agree with closed forms for guests far too big for the reference."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_engine_properties import ODD_COSTS, layout_kwargs, scenario_kwargs, zap_levels

from engine import Scenario, available_kernels, kernel_preset, simulate
from engine.fast import GuestCache

# The default model, and one whose every cost differs from it.
COST_MODELS = st.sampled_from(["seed-2022", ODD_COSTS])

DIFFERENTIAL = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)


def assert_same(scenario: Scenario, cost_model: str = "seed-2022") -> None:
    fast = simulate(scenario, "fast", cost_model)
    reference = simulate(scenario, "reference", cost_model)
    diff = {
        k: (getattr(fast, k), v) for k, v in reference.to_dict().items() if getattr(fast, k) != v
    }
    assert not diff, f"fast != reference (fast, reference): {diff} for {scenario}"


@DIFFERENTIAL
@given(kw=scenario_kwargs(), cost_model=COST_MODELS)
def test_fast_equals_reference(kw, cost_model) -> None:
    assert_same(Scenario(**kw), cost_model)


@DIFFERENTIAL
@given(kw=scenario_kwargs(form="memslots"), cost_model=COST_MODELS)
def test_fast_equals_reference_on_memslot_layouts(kw, cost_model) -> None:
    """Random slot lists (2 to 4 slots, unaligned edges, mixed backing page
    sizes, partial population, split ratios in [0, 1]) under every other
    option: tables that mix leaves and child tables, leaves at three
    levels, edges inside one table."""
    assert_same(Scenario(**kw), cost_model)


@DIFFERENTIAL
@given(kw=scenario_kwargs(form="q35"), cost_model=COST_MODELS)
def test_fast_equals_reference_on_q35(kw, cost_model) -> None:
    assert_same(Scenario(**kw), cost_model)


@st.composite
def contended(draw) -> Scenario:
    """Where the walks differ most: a contended CPU (``always``) or short
    ticks, a flush before every yield priced by many vCPUs, partial
    population over small guests of few tables (so the first and last
    chains, empty tables and tables cut short by the host's address width
    are common), and both lock modes."""
    page_size = draw(st.sampled_from(["4K", "4K", "2M", "1G"]))
    pages = draw(st.integers(1, {"4K": 3 * 512, "2M": 3 * 512, "1G": 700}[page_size]))
    page_bytes = {"4K": 1 << 12, "2M": 1 << 21, "1G": 1 << 30}[page_size]
    paging_levels = draw(st.sampled_from([4, 5]))
    accessed = draw(st.sampled_from([0.0, 0.4, 1.0]))
    bits = max(32, (pages * page_bytes - 1).bit_length())
    return Scenario(
        paging_levels=paging_levels,
        guest_memory=pages * page_bytes,
        page_size=page_size,
        populated_ratio=draw(st.sampled_from([1.0, 0.9, 0.5, 0.1, 0.002])),
        accessed_ratio=accessed,
        dirty_ratio=accessed * draw(st.sampled_from([0.0, 0.5, 1.0])),
        zap_levels=draw(zap_levels(paging_levels)),
        vcpus=draw(st.sampled_from([1, 64, 416])),
        host_phys_bits=draw(st.one_of(st.none(), st.integers(bits, min(bits + 3, 52)))),
        resched=draw(st.sampled_from(["always", "always", "always", "tick", "tick"])),
        resched_interval_us=draw(st.sampled_from([0.05, 0.5, 3.0, 20.0])),
        mmu_lock=draw(st.sampled_from(["write", "read"])),
        flush_on_yield=draw(st.sampled_from([True, True, True, False])),
        seed=draw(st.integers(0, 2**32)),
    )


@DIFFERENTIAL
@given(scenario=contended(), cost_model=COST_MODELS)
def test_fast_equals_reference_when_contended(scenario, cost_model) -> None:
    assert_same(scenario, cost_model)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kw=scenario_kwargs(),
    variants=st.lists(
        st.fixed_dictionaries(
            {
                "zap_levels": st.sampled_from(["root", "two_pass", "per_level", "upstream"]),
                "vcpus": st.sampled_from([1, 8, 416]),
                "flush_on_yield": st.booleans(),
                "resched": st.sampled_from(["always", "never", "tick"]),
                "mmu_lock": st.sampled_from(["write", "read"]),
                "kernel": st.sampled_from([None, "5.15", "5.18", "6.13"]),
                "trigger": st.sampled_from(["memslot", "vm_destroy"]),
                "smm_populated_ratio": st.sampled_from([0.0, 0.5]),
                "lock_contention_us": st.sampled_from([None, 2.0]),
            }
        ),
        min_size=2,
        max_size=6,
    ),
    cost_model=COST_MODELS,
)
def test_cached_guest_and_passes_change_nothing(kw, variants, cost_model) -> None:
    """A sweep batch simulates many scenarios of one VM shape through one
    GuestCache, which shares the page table draw and the passes built on it;
    every result must equal the uncached one."""
    guests = GuestCache(size=2)  # as a sweep batch holds them
    for variant in variants:
        scenario = Scenario(**{**kw, **variant})
        cached = simulate(scenario, "fast", cost_model, guests=guests)
        assert cached == simulate(scenario, "fast", cost_model), scenario


def test_guest_cache_tells_layouts_apart() -> None:
    """Scenarios that differ only in their memory layout build other tables."""
    guests = GuestCache(size=4)
    base = dict(guest_memory="4GiB", page_size="2M", zap_levels="per_level", resched="always")
    slots = [dict(gpa=0, size="1GiB"), dict(gpa="2GiB", size=(2 << 30) - 4096)]
    for kw in (
        dict(base),
        dict(base, layout="q35"),
        dict(base, split_ratio=0.5),
        dict(base, guest_memory=None, memslots=slots),
        dict(base, guest_memory=None, memslots=[dict(slots[0], page_size="4K"), slots[1]]),
    ):
        s = Scenario(**kw)
        assert simulate(s, "fast", guests=guests) == simulate(s, "fast"), kw


@st.composite
def on_kernels(draw) -> Scenario:
    """Kernel presets, triggers, SMM roots, serial and parallel root zaps,
    preemption models and waiters for mmu_lock, mostly under ``tick``: a
    preset alone, or with some of its settings given explicitly (every one
    of them, with no kernel), over small flat, q35 and memslot guests."""
    kernel = draw(st.sampled_from([None, *available_kernels()]))
    models = ("none", "voluntary", "full", "lazy") if kernel is None else (
        kernel_preset(kernel).preempt_models
    )  # fmt: skip
    page_size = draw(st.sampled_from(["4K", "4K", "2M", "1G"]))
    paging_levels = draw(st.sampled_from([4, 5]))
    accessed = draw(st.sampled_from([0.0, 0.5, 1.0]))
    kw = {
        "kernel": kernel,
        "trigger": draw(st.sampled_from(["memslot", "vm_destroy"])),
        "paging_levels": paging_levels,
        "page_size": page_size,
        **draw(layout_kwargs(page_size)),
        "populated_ratio": draw(st.sampled_from([1.0, 0.7, 0.1])),
        "accessed_ratio": accessed,
        "dirty_ratio": accessed * draw(st.sampled_from([0.0, 0.5, 1.0])),
        "smm_populated_ratio": draw(st.sampled_from([0.0, 0.0, 0.05, 0.5, 1.0])),
        "vcpus": draw(st.sampled_from([1, 8, 64])),
        "resched": draw(st.sampled_from(["tick", "tick", "tick", "never", "always"])),
        "resched_interval_us": draw(st.sampled_from([0.05, 0.5, 3.0, 20.0])),
        "preempt": draw(st.sampled_from(models)),
        "lock_contention_us": draw(st.sampled_from([None, 0.05, 0.7, 3.0, 11.0])),
        "seed": draw(st.integers(0, 2**32)),
    }
    explicit = {
        "zap_levels": zap_levels(paging_levels),
        "mmu_lock": st.sampled_from(["write", "read"]),
        "flush_on_yield": st.booleans(),
        "ad_writeback": st.booleans(),
        "root_zap": st.sampled_from(["serial", "parallel"]),
        "flush_on_remove": st.booleans(),
    }
    for name, values in explicit.items():
        if kernel is None or draw(st.integers(0, 3)) == 0:
            kw[name] = draw(values)
    return Scenario(**kw)


@settings(DIFFERENTIAL, max_examples=320)
@given(scenario=on_kernels(), cost_model=COST_MODELS)
def test_fast_equals_reference_on_kernels(scenario, cost_model) -> None:
    event(f"kernel={scenario.kernel}")
    event(f"roots={len(scenario.roots)} root_zap={scenario.root_zap}")
    event(f"resched={scenario.resched} waiter honoured={scenario.contention_honoured}")
    assert_same(scenario, cost_model)


@st.composite
def tick_heavy(draw) -> Scenario:
    """Guests big enough that many yields fall inside full tables, so the
    fast engine's batched yield search (not only its one-at-a-time path)
    is what gets compared."""
    return Scenario(
        paging_levels=draw(st.sampled_from([4, 5])),
        guest_memory=draw(st.integers(4096, 24576)) * 4096,
        page_size="4K",
        zap_levels=draw(st.sampled_from(["per_level", "upstream", "2M,root", "4K,1G,root"])),
        populated_ratio=draw(st.sampled_from([1.0, 0.97, 0.5])),
        accessed_ratio=1.0,
        dirty_ratio=draw(st.sampled_from([0.0, 0.5, 1.0])),
        resched="tick",
        resched_interval_us=draw(st.sampled_from([3.0, 4.5, 8.0, 20.0])),
        mmu_lock=draw(st.sampled_from(["write", "read"])),
        flush_on_yield=draw(st.booleans()),
        vcpus=draw(st.integers(1, 16)),
        seed=draw(st.integers(0, 2**32)),
    )


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=tick_heavy())
def test_fast_equals_reference_with_many_tick_yields(scenario) -> None:
    assert_same(scenario)


# Closed forms for guests the reference engine cannot run -------------------
#
# A fully populated 4K guest of 512 GiB under 4-level paging, 46 host bits:
#   root entries below end: 2^(46-12) / 2^27 = 128
#   tables: 1 L3 (under root entry 0) + 512 L2 + 512^2 L1 = 262,657
#   leaves: 2^27 = 134,217,728
# `root`, never:  128 visits.
# `1G,root`, never: the 1G pass visits 128 root entries + 512 L3 entries
#   = 640, the root pass 128: 768 (the same as a 1 GiB guest: only levels
#   >= 3 are walked).
# `1G,root`, always: a yield before every step-side visit, each costing the
#   aborted visit plus one visit per ancestor: 1G pass: 127 root-level
#   yields (+1 visit each) and 511 L3-level yields (+2 each): 640 + 127 +
#   1022 = 1789; root pass 128 + 127 = 255; total 2044 visits, 765 yields.
# `4K,2M,1G,root`, never: 4K pass 128 + 512 + 512^2 + 512^3 = 134,480,512;
#   2M pass 128 + 512 + 512^2 = 262,784; 1G pass 640; root pass 128;
#   total 134,744,064.
#
# A fully populated 4K guest of 16 TiB under 5-level paging, 52 host bits:
#   root entries below end: 2^(52-12) / 2^36 = 16
#   tables: 1 L4 + 32 L3 + 32*512 = 16,384 L2 + 16,384*512 = 8,388,608 L1
#   = 8,405,025; leaves 2^32 = 4,294,967,296
# `root`, never: 16 visits.
# `4K,2M,1G,512G,root`, never: 4K pass 16 + 512 + 16,384 + 8,388,608 +
#   4,294,967,296 = 4,303,372,816; 2M pass 16 + 512 + 16,384 + 8,388,608 =
#   8,405,520; 1G pass 16,912; 512G pass 528; root pass 16; total
#   4,311,795,792.
GIB512 = dict(
    paging_levels=4, guest_memory="512GiB", page_size="4K", accessed_ratio=0.0, dirty_ratio=0.0
)
TIB16 = dict(
    paging_levels=5, guest_memory="16TiB", page_size="4K", accessed_ratio=1.0, dirty_ratio=0.5
)

# `per_level` under `always` (a yield in front of every step side, each
# adding its aborted visit and the restart's walk down, 1 + root - L visits
# for a step side at level L).  A pass at zap level Z walks the tables at
# levels >= Z; at level L it visits V_L entries of E_L tables, and every
# entry but each table's entry 0 is a step side: S_L = V_L - E_L.
#
# 16 TiB, 5-level, 52 bits: V = (16, 512, 16,384, 8,388,608, 2^32) and
#   E = (1, 1, 32, 16,384, 8,388,608) for L = 5..1, so
#   S = (15, 511, 16,352, 8,372,224, 4,286,578,688).
#   yields per pass, Z = 1..5: sum of S_L for L >= Z: 4,294,967,790;
#   8,389,102; 16,878; 526; 15: total 4,303,374,311.
#   added visits: sum of S_L * (6 - L) for L >= Z: 21,466,432,429;
#   33,538,989; 50,093; 1,037; 15: total 21,500,022,563, plus the
#   4,311,795,792 visits of `never`: 25,811,818,355.
# 16 TiB, 4-level, 46 bits: V = (128, 16,384, 8,388,608, 2^32),
#   E = (1, 32, 16,384, 8,388,608), S = (127, 16,352, 8,372,224,
#   4,286,578,688) for L = 4..1.
#   yields: 4,294,967,391; 8,388,703; 16,479; 127: total 4,303,372,700.
#   added visits, S_L * (5 - L): 17,171,464,255; 25,149,503; 32,831; 127:
#   total 17,196,646,716, plus `never`'s 4,311,794,176 (4,303,372,416 +
#   8,405,120 + 16,512 + 128): 21,508,440,892.
TIB16_4 = dict(TIB16, paging_levels=4)

CLOSED_FORMS = [
    # (scenario kwargs, visits, yields, leaf_zapped, tables_freed, max_op_leaves)
    (dict(GIB512, zap_levels="root", resched="never"), 128, 0, 2**27, 262_657, 2**27),
    (dict(GIB512, zap_levels="root", resched="always"), 255, 127, 2**27, 262_657, 2**27),
    (dict(GIB512, zap_levels="1G,root", resched="never"), 768, 0, 2**27, 262_657, 2**18),
    (dict(GIB512, zap_levels="1G,root", resched="always"), 2044, 765, 2**27, 262_657, 2**18),
    (dict(GIB512, zap_levels="per_level", resched="never"), 134_744_064, 0, 2**27, 262_657, 1),
    (dict(TIB16, zap_levels="root", resched="never"), 16, 0, 2**32, 8_405_025, 2**32),
    (
        dict(TIB16, zap_levels="4K,2M,1G,512G,root", resched="never"),
        4_311_795_792,
        0,
        2**32,
        8_405_025,
        1,
    ),
    (
        dict(TIB16, zap_levels="per_level", resched="always", flush_on_yield=True),
        25_811_818_355,
        4_303_374_311,
        2**32,
        8_405_025,
        1,
    ),
    (
        dict(TIB16_4, zap_levels="per_level", resched="always", mmu_lock="read", vcpus=416),
        21_508_440_892,
        4_303_372_700,
        2**32,
        8_405_024,
        1,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("kw, visits, yields, leaves, tables, op_leaves", CLOSED_FORMS)
def test_fast_walk_counts_match_closed_forms(kw, visits, yields, leaves, tables, op_leaves):
    r = simulate(Scenario(**kw), "fast")
    assert (r.visits, r.yields, r.leaf_zapped, r.tables_freed, r.max_op_leaves) == (
        visits,
        yields,
        leaves,
        tables,
        op_leaves,
    )
    assert r.removed_entries_scanned == 512 * tables
    # A is 0 or 1 here, so its count is exact; D=0.5 is drawn per table:
    # about half of 2^32, within 0.1%.
    assert r.accessed_writebacks == leaves * kw["accessed_ratio"]
    assert abs(r.dirty_writebacks - leaves * kw["dirty_ratio"]) <= 1e-3 * leaves


@pytest.mark.slow
def test_fast_tick_16tib_yields_once_per_interval() -> None:
    """The benchmark's scenario: with 1000 us ticks every yield answers one
    tick, so yields = floor(total / (interval)) give or take the last one."""
    s = Scenario(**TIB16, zap_levels="4K,2M,1G,512G,root", resched="tick", resched_interval_us=1000)
    r = simulate(s, "fast")
    assert r.leaf_zapped == 2**32 and r.tables_freed == 8_405_025
    assert abs(r.yields - r.total_ns // 1_000_000) <= 1
    assert 1_000_000 <= r.max_rcu_hold_ns < 1_100_000
    assert not r.rcu_stall
