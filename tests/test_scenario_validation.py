"""Issue 2: a Scenario validates itself when built; every bad input raises a
ScenarioError naming the field, the value, and what is allowed."""

from __future__ import annotations

import math

import pytest

from engine import Scenario, ScenarioError, parse_memory, simulate

# A tiny valid scenario; each test changes one field.
TINY = {"guest_memory": "8KiB", "resched": "never"}


def rejects(field: str, **changes) -> ScenarioError:
    """Build a scenario with ``changes`` and return the error, which must name ``field``."""
    with pytest.raises(ScenarioError) as info:
        Scenario(**{**TINY, **changes})
    err = info.value
    assert err.field == field
    assert isinstance(err, ValueError)
    assert err.allowed, "the error says what is allowed"
    assert field in str(err)
    return err


def test_tiny_scenario_is_valid() -> None:
    """The base of every test below is itself accepted."""
    s = Scenario(**TINY)
    assert s.guest_memory == 8192
    assert s.zap_levels == ("1G", "root")


# -- paging_levels ------------------------------------------------------------


@pytest.mark.parametrize("levels", [3, 6, 0, "4", True, 4.5, None])
def test_paging_levels_other_than_4_or_5(levels) -> None:
    err = rejects("paging_levels", paging_levels=levels)
    assert err.value == levels or (levels is None and err.value is None)
    assert "4" in err.allowed and "5" in err.allowed


@pytest.mark.parametrize("levels", [4, 5])
def test_paging_levels_4_and_5_are_accepted(levels) -> None:
    assert Scenario(**TINY, paging_levels=levels).root_level == levels


# -- zap_levels ----------------------------------------------------------------


@pytest.mark.parametrize("zap", ["8K", "1G,leaf", "huge", "4K,2M,1G,top", ("1G", "root", None), 42])
def test_zap_levels_unknown(zap) -> None:
    assert rejects("zap_levels", zap_levels=zap).value == zap


@pytest.mark.parametrize(
    "zap", ["root,1G", "2M,4K,root", "1G,1G,root", ("2M", "4K", "root"), (3, 2, 4)]
)
def test_zap_levels_not_ascending(zap) -> None:
    rejects("zap_levels", zap_levels=zap)


@pytest.mark.parametrize(
    ("paging", "zap"),
    [
        (4, "256T,root"),  # level 5 with 4-level paging
        (4, "1G,512G,root"),  # 512G is the root level with 4-level paging
        (4, (1, 5)),  # level numbers above the root
        (5, (1, 6)),
        (4, (1, 2, 3, 4, 5)),
    ],
)
def test_zap_levels_above_the_root(paging, zap) -> None:
    rejects("zap_levels", paging_levels=paging, zap_levels=zap)


@pytest.mark.parametrize(
    ("paging", "zap"),
    [
        (4, "512G"),  # the example: the root level by name, not 'root'
        (4, "1G"),
        (4, "4K,2M"),
        (5, "4K,2M,1G,512G"),
        (5, (1, 2, 3)),
        (4, ()),
        (4, ""),
    ],
)
def test_zap_levels_not_ending_at_the_root(paging, zap) -> None:
    rejects("zap_levels", paging_levels=paging, zap_levels=zap)


@pytest.mark.parametrize(
    ("paging", "zap", "normalized"),
    [
        (4, "root", ("root",)),
        (4, "two_pass", ("1G", "root")),
        (4, "per_level", ("4K", "2M", "1G", "root")),
        (5, "per_level", ("4K", "2M", "1G", "512G", "root")),
        (5, "upstream", ("4K", "2M", "1G", "root")),
        (4, "2M,root", ("2M", "root")),
        (4, (1, 4), ("4K", "root")),
        (5, ("512G", "root"), ("512G", "root")),
    ],
)
def test_valid_zap_levels_are_normalized(paging, zap, normalized) -> None:
    assert Scenario(**TINY, paging_levels=paging, zap_levels=zap).zap_levels == normalized


# -- ratios ----------------------------------------------------------------


RATIOS = ("populated_ratio", "accessed_ratio", "dirty_ratio")


@pytest.mark.parametrize("field", RATIOS)
@pytest.mark.parametrize("value", [-0.01, 1.01, -1, 2, math.nan, math.inf, -math.inf])
def test_ratio_outside_0_1(field, value) -> None:
    # dirty_ratio <= accessed_ratio holds for the default accessed_ratio=1 unless the
    # accessed ratio itself is the bad one; keep dirty at 0 then so only one rule fails.
    extra = {"dirty_ratio": 0.0} if field == "accessed_ratio" else {}
    err = rejects(field, **{**extra, field: value})
    assert err.value is value or err.value == value


@pytest.mark.parametrize("field", RATIOS)
@pytest.mark.parametrize("value", ["0.5", None, True])
def test_ratio_not_a_number(field, value) -> None:
    rejects(field, **{field: value})


@pytest.mark.parametrize("field", RATIOS)
def test_ratio_bounds_are_inclusive(field) -> None:
    for value in (0.0, 1.0, 0, 1):
        Scenario(**{**TINY, "accessed_ratio": 1.0, "dirty_ratio": 0.0, field: value})


@pytest.mark.parametrize(("accessed", "dirty"), [(0.5, 0.6), (0.0, 0.01), (0.3, 1.0)])
def test_dirty_ratio_above_accessed_ratio(accessed, dirty) -> None:
    err = rejects("dirty_ratio", accessed_ratio=accessed, dirty_ratio=dirty)
    assert err.value == dirty
    assert "accessed_ratio" in err.allowed


def test_dirty_ratio_equal_to_accessed_ratio_is_allowed() -> None:
    assert Scenario(**TINY, accessed_ratio=0.25, dirty_ratio=0.25).dirty_ratio == 0.25


# -- guest_memory ----------------------------------------------------------


@pytest.mark.parametrize("memory", [0, -4096, "0GiB", "0", 0.0])
def test_guest_memory_not_positive(memory) -> None:
    rejects("guest_memory", guest_memory=memory)


@pytest.mark.parametrize(
    ("page_size", "memory"),
    [("4K", 4095), ("4K", 4097), ("4K", "6KiB"), ("2M", "1MiB"), ("2M", "3MiB"), ("1G", "1536MiB")],
)
def test_guest_memory_not_a_multiple_of_the_page_size(page_size, memory) -> None:
    err = rejects("guest_memory", page_size=page_size, guest_memory=memory)
    assert page_size in err.allowed


@pytest.mark.parametrize(
    ("kwargs", "memory"),
    [
        ({"host_phys_bits": 32}, "8GiB"),  # 2^32 = 4 GiB
        ({"host_phys_bits": 32, "page_size": "4K"}, (4 << 30) + 4096),
        ({}, "128TiB"),  # default 46 bits = 64 TiB
        ({"paging_levels": 5}, "8PiB"),  # default 52 bits = 4 PiB
    ],
)
def test_guest_memory_beyond_host_phys_bits(kwargs, memory) -> None:
    err = rejects("guest_memory", guest_memory=memory, **{"page_size": "1G", **kwargs})
    assert "host_phys_bits" in err.allowed


def test_guest_memory_at_the_host_phys_bits_limit_is_allowed() -> None:
    s = Scenario(**{**TINY, "host_phys_bits": 32, "guest_memory": "4GiB", "page_size": "1G"})
    assert s.guest_memory == 4 << 30


def test_guest_memory_beyond_the_4_level_root_table() -> None:
    """4-level paging maps 512 x 512 GiB = 256 TiB even when host_phys_bits is 52."""
    Scenario(**{**TINY, "host_phys_bits": 52, "guest_memory": "256TiB", "page_size": "1G"})
    rejects("guest_memory", host_phys_bits=52, guest_memory="257TiB", page_size="1G")


@pytest.mark.parametrize(
    "memory",
    [
        "12TB",
        "-1GiB",
        1e400,
        "1e400",
        math.nan,
        "1.5GiB",
        "GiB",
        "",
        "1 GiB 2",
        "1gib",
        [1],
        1.5,
    ],
)
def test_guest_memory_malformed(memory) -> None:
    err = rejects("guest_memory", guest_memory=memory)
    assert err.value is memory or err.value == memory


def test_guest_memory_omitted_is_one_gib() -> None:
    """None is the default: 1 GiB for a preset layout (memslots: their total)."""
    assert Scenario(guest_memory=None).guest_memory == 1 << 30
    assert Scenario().guest_memory == 1 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512GiB", 512 << 30), ("4K", 4096), ("1TiB", 1 << 40), (8192, 8192), (8192.0, 8192)],
)
def test_parse_memory_accepts_binary_units(text, expected) -> None:
    assert parse_memory(text) == expected


# -- other fields ------------------------------------------------------------


@pytest.mark.parametrize("vcpus", [0, -1, 1.5, "2", None, True])
def test_vcpus_below_one_or_not_an_integer(vcpus) -> None:
    rejects("vcpus", vcpus=vcpus)


def test_one_vcpu_is_allowed() -> None:
    assert Scenario(**TINY, vcpus=1).vcpus == 1


@pytest.mark.parametrize("resched", ["sometimes", "ALWAYS", "", None, 1])
def test_unknown_resched(resched) -> None:
    err = rejects("resched", resched=resched)
    assert "tick" in err.allowed


@pytest.mark.parametrize("lock", ["exclusive", "shared", "WRITE", True])
def test_unknown_mmu_lock(lock) -> None:
    err = rejects("mmu_lock", mmu_lock=lock)
    assert "read" in err.allowed and "write" in err.allowed


def test_mmu_lock_left_none_is_the_kernel_s_or_write() -> None:
    assert Scenario(mmu_lock=None).mmu_lock == "write"
    assert Scenario(kernel="6.6", mmu_lock=None).mmu_lock == "read"


@pytest.mark.parametrize("page_size", ["8K", "4k", "512G", 4096, None])
def test_unknown_page_size(page_size) -> None:
    rejects("page_size", page_size=page_size)


@pytest.mark.parametrize("bits", [31, 53, 46.5, "46", True])
def test_host_phys_bits_out_of_range(bits) -> None:
    rejects("host_phys_bits", host_phys_bits=bits)


@pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf, 1e-7, "1000", True])
def test_resched_interval_not_a_positive_duration(interval) -> None:
    """1e-7 us rounds to 0 ps: it would divide by zero in the tick check."""
    rejects("resched_interval_us", resched_interval_us=interval)


@pytest.mark.parametrize("timeout", [0, -21, math.nan, math.inf, 1e-13])
def test_rcu_stall_timeout_not_a_positive_duration(timeout) -> None:
    rejects("rcu_stall_timeout_s", rcu_stall_timeout_s=timeout)


@pytest.mark.parametrize("flag", ["yes", 1, 0, "false"])
def test_flush_on_yield_not_a_bool(flag) -> None:
    rejects("flush_on_yield", flush_on_yield=flag)


def test_flush_on_yield_left_none_is_the_kernel_s_or_false() -> None:
    assert Scenario(flush_on_yield=None).flush_on_yield is False
    assert Scenario(kernel="5.15", trigger="vm_destroy").flush_on_yield is True


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "0", None])
def test_seed_not_a_non_negative_int64(seed) -> None:
    rejects("seed", seed=seed)


# -- simulate(): cost model and engine ----------------------------------------


@pytest.mark.parametrize("model", ["no-such-model", "/nonexistent/model.yaml", "seed-2022.yml"])
def test_unknown_cost_model(model) -> None:
    with pytest.raises(ScenarioError) as info:
        simulate(Scenario(**TINY), engine="reference", cost_model=model)
    assert info.value.field == "cost_model"
    assert "seed-2022" in info.value.allowed


def test_cost_model_missing_a_cost(tmp_path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("name: partial\nversion: 1\ncosts:\n  visit_ns: 1\n")
    with pytest.raises(ScenarioError) as info:
        simulate(Scenario(**TINY), engine="reference", cost_model=path)
    assert info.value.field == "cost_model"
    assert "spte_clear_ns" in info.value.allowed


def test_cost_model_negative_cost(tmp_path) -> None:
    from engine import COST_FIELDS

    lines = "".join(f"  {k}: {-1 if k == 'yield_ns' else 1}\n" for k in COST_FIELDS)
    path = tmp_path / "negative.yaml"
    path.write_text(f"name: negative\nversion: 1\ncosts:\n{lines}")
    with pytest.raises(ScenarioError) as info:
        simulate(Scenario(**TINY), engine="reference", cost_model=path)
    assert info.value.field == "cost_model.yield_ns"


@pytest.mark.parametrize("engine", ["turbo", "", "Reference", None])
def test_unknown_engine(engine) -> None:
    with pytest.raises(ScenarioError) as info:
        simulate(Scenario(**TINY), engine=engine)
    assert info.value.field == "engine"
    assert "reference" in info.value.allowed


# -- memory layouts: layout, memslots, split_ratio --------------------------------

TWO_SLOTS = [{"gpa": 0, "size": "640KiB"}, {"gpa": "1MiB", "size": "2047MiB", "page_size": "1G"}]


def slots_with(i: int, **changes) -> list[dict]:
    slots = [dict(slot) for slot in TWO_SLOTS]
    slots[i].update(changes)
    return slots


def test_memslots_give_guest_memory_and_the_layout_label() -> None:
    s = Scenario(memslots=TWO_SLOTS, page_size="2M", populated_ratio=0.5)
    assert s.guest_memory == (640 << 10) + (2047 << 20)
    assert s.layout == "memslots"
    # A slot takes the scenario's page size and ratios where it sets none.
    assert [slot.page_size for slot in s.slots] == ["2M", "1G"]
    assert {slot.populated_ratio for slot in s.slots} == {0.5}
    assert Scenario(**s.to_dict()) == s  # round trip
    given = dict(memslots=TWO_SLOTS, page_size="2M", populated_ratio=0.5)
    assert Scenario(**given, guest_memory=s.guest_memory) == s


@pytest.mark.parametrize(
    "slots, field, allowed",
    [
        # overlapping: slot 1 starts inside slot 0
        (slots_with(1, gpa="512KiB"), "memslots[1].gpa", "do not overlap"),
        # listed out of order, overlapping: the error names the slot as listed
        (list(reversed(slots_with(0, size="2MiB"))), "memslots[0].gpa", "do not overlap"),
        # not 4 KiB-aligned
        (slots_with(1, gpa=(1 << 20) + 512), "memslots[1].gpa", "multiple of 4KiB"),
        (slots_with(0, size=6000), "memslots[0].size", "multiple of 4KiB"),
        # beyond host_phys_bits (46: 64 TiB)
        (slots_with(1, gpa="64TiB", size="1GiB"), "memslots[1].gpa", "2^host_phys_bits"),
        (slots_with(1, gpa="63TiB", size="2TiB"), "memslots[1].size", "2^host_phys_bits"),
        # unknown page size, ratios outside [0, 1]
        (slots_with(1, page_size="512G"), "memslots[1].page_size", "'1G'"),
        (slots_with(0, populated_ratio=1.5), "memslots[0].populated_ratio", "[0, 1]"),
        (slots_with(1, split_ratio=-0.1), "memslots[1].split_ratio", "[0, 1]"),
        (slots_with(1, accessed_ratio=0.2, dirty_ratio=0.5), "memslots[1].dirty_ratio", "at most"),
        # malformed slots and lists
        (slots_with(0, base=0), "memslots[0].base", "one of"),
        ([{"gpa": 0}], "memslots[0].size", "gpa and size"),
        ([{"gpa": 0, "size": 0}], "memslots[0].size", "positive"),
        ([], "memslots", "non-empty"),
        ("0-2GiB", "memslots", "non-empty list"),
        ([42], "memslots[0]", "mapping"),
    ],
)
def test_memslots_rejected(slots, field, allowed) -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario(memslots=slots)
    err = info.value
    assert err.field == field
    assert allowed in err.allowed
    assert field in str(err)


def test_memslots_guest_memory_must_be_their_total() -> None:
    err = rejects("guest_memory", memslots=TWO_SLOTS, guest_memory="2GiB")
    assert "2047MiB" not in err.allowed and "total" in err.allowed


@pytest.mark.parametrize("layout", ["q36", "", None, 1, "memslots"])
def test_unknown_layout(layout) -> None:
    err = rejects("layout", layout=layout)
    assert "flat" in err.allowed and "q35" in err.allowed


def test_a_preset_layout_with_memslots_is_rejected() -> None:
    err = rejects("layout", layout="q35", memslots=TWO_SLOTS)
    assert "memslots" in err.allowed


@pytest.mark.parametrize(
    "memory, page_size", [("1MiB", "4K"), ("640KiB", "4K"), ("4KiB", "4K"), ("512KiB", "4K")]
)
def test_q35_too_small_for_its_low_slots(memory, page_size) -> None:
    err = rejects("guest_memory", layout="q35", guest_memory=memory, page_size=page_size)
    assert "1MiB" in err.allowed and "q35" in err.allowed


def test_q35_smallest_guests() -> None:
    assert Scenario(layout="q35", guest_memory=(1 << 20) + 4096).slots[1].size == 4096
    assert len(Scenario(layout="q35", guest_memory="2MiB", page_size="2M").slots) == 2


def test_q35_beyond_host_phys_bits_counts_the_hole_below_4gib() -> None:
    """12 GiB of q35 RAM reaches 14 GiB: over 2^33 = 8 GiB, though 12 GiB
    would fit flat under 2^34."""
    err = rejects("guest_memory", layout="q35", guest_memory="12GiB", host_phys_bits=33)
    assert "2^host_phys_bits" in err.allowed and "q35" in err.allowed
    Scenario(layout="q35", guest_memory="12GiB", host_phys_bits=34)


@pytest.mark.parametrize("ratio", [-0.01, 1.01, math.nan, "0.2", True])
def test_split_ratio_outside_unit_interval(ratio) -> None:
    rejects("split_ratio", split_ratio=ratio)
