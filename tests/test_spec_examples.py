"""Spec section 8: the worked examples every faithful engine reproduces exactly.

A fully populated 4K guest of 1 GiB with A=D=0.  The counts depend on
geometry and scheduling only, so they are also checked under a cost model
whose numbers differ from the default in every field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from engine import Scenario, simulate

# The issue asks for the reference engine; ZAPSWEEP_TEST_ENGINE=fast checks the other one.
ENGINE = os.environ.get("ZAPSWEEP_TEST_ENGINE", "reference")

# Every number differs from seed-2022, so a count that leaked a cost would show.
OTHER_COSTS = {
    "name": "spec-examples-other",
    "costs": {
        "visit_ns": 7,
        "spte_clear_ns": 3,
        "nonpresent_entry_ns": 1,
        "accessed_writeback_ns": 11,
        "dirty_writeback_ns": 13,
        "removed_table_ns": 17,
        "atomic_write_ns": 19,
        "yield_ns": 23,
        "flush_base_ns": 29,
        "flush_per_vcpu_ns": 31,
    },
}


@dataclass(frozen=True)
class Row:
    paging_levels: int
    host_phys_bits: int
    zap_levels: str
    resched: str
    visits: int
    yields: int
    leaf_zapped: int
    tables_freed: int
    removed_entries_scanned: int
    max_op_leaves: int

    def scenario(self) -> Scenario:
        return Scenario(
            paging_levels=self.paging_levels,
            host_phys_bits=self.host_phys_bits,
            guest_memory="1GiB",
            page_size="4K",
            populated_ratio=1.0,
            accessed_ratio=0.0,
            dirty_ratio=0.0,
            zap_levels=self.zap_levels,
            resched=self.resched,
        )

    def expected(self) -> dict[str, int]:
        return {
            "visits": self.visits,
            "yields": self.yields,
            "leaf_zapped": self.leaf_zapped,
            "tables_freed": self.tables_freed,
            "removed_entries_scanned": self.removed_entries_scanned,
            "max_op_leaves": self.max_op_leaves,
        }


# The table of spec section 8, row for row.
ROWS = [
    Row(4, 46, "root", "never", 128, 0, 262144, 514, 263168, 262144),
    Row(4, 46, "root", "always", 255, 127, 262144, 514, 263168, 262144),
    Row(4, 46, "1G,root", "never", 768, 0, 262144, 514, 263168, 262144),
    Row(4, 46, "1G,root", "always", 2044, 765, 262144, 514, 263168, 262144),
    Row(4, 46, "4K,2M,1G,root", "never", 265216, 0, 262144, 514, 263168, 1),
    Row(5, 52, "root", "never", 16, 0, 262144, 515, 263680, 262144),
    Row(5, 52, "4K,2M,1G,512G,root", "always", 1587842, 266306, 262144, 515, 263680, 1),
]
IDS = [f"{r.paging_levels}lvl-{r.zap_levels}-{r.resched}" for r in ROWS]


def observed(result, row: Row) -> dict[str, int]:
    return {key: getattr(result, key) for key in row.expected()}


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_spec_section_8_row(row: Row) -> None:
    result = simulate(row.scenario(), engine=ENGINE)
    assert observed(result, row) == row.expected()
    # A=D=0: nothing to write back.
    assert result.accessed_writebacks == 0
    assert result.dirty_writebacks == 0


SHORT = [(r, i) for r, i in zip(ROWS, IDS, strict=True) if r.visits < 10_000]


@pytest.mark.parametrize("row", [r for r, _ in SHORT], ids=[i for _, i in SHORT])
def test_spec_counts_do_not_depend_on_costs(row: Row) -> None:
    """'Counts depend on geometry and scheduling only, not on costs.'"""
    result = simulate(row.scenario(), engine=ENGINE, cost_model=OTHER_COSTS)
    assert observed(result, row) == row.expected()


def test_spec_names_the_examples_strategies() -> None:
    """The rows use the named strategies of spec section 4."""
    assert [r.scenario().strategy for r in ROWS] == [
        "root",
        "root",
        "two_pass",
        "two_pass",
        "per_level",
        "root",
        "per_level",
    ]


# -- Part II, section 13: memory layouts ------------------------------------------
#
# Fully populated, A=D=0, split_ratio 0, 4-level paging, 46 host bits; both
# engines.  Counts as in section 8: geometry and scheduling only.

PART2_FIELDS = (
    "visits",
    "yields",
    "leaf_zapped",
    "leaves_4k",
    "leaves_2m",
    "leaves_1g",
    "tables_freed",
    "max_op_leaves",
)
FULL = dict(paging_levels=4, populated_ratio=1.0, accessed_ratio=0.0, dirty_ratio=0.0)


@dataclass(frozen=True)
class LayoutRow:
    name: str
    layout: dict
    zap_levels: str
    resched: str
    expected: tuple  # PART2_FIELDS

    def scenario(self) -> Scenario:
        return Scenario(**FULL, **self.layout, zap_levels=self.zap_levels, resched=self.resched)


Q35_8G_1G = dict(layout="q35", guest_memory="8GiB", page_size="1G")
Q35_2G_2M = dict(layout="q35", guest_memory="2GiB", page_size="2M")

SECTION_13 = [
    LayoutRow("q35-8G-1G-root", Q35_8G_1G, "root", "never", (128, 0, 934, 416, 511, 7, 3, 934)),
    LayoutRow(
        "q35-8G-1G-two_pass", Q35_8G_1G, "1G,root", "always", (2044, 765, 934, 416, 511, 7, 3, 927)
    ),
    LayoutRow("q35-2G-2M-root", Q35_2G_2M, "root", "never", (128, 0, 1439, 416, 1023, 0, 4, 1439)),
    LayoutRow(
        "flat-3G-1G-root",
        dict(layout="flat", guest_memory="3GiB", page_size="1G"),
        "root",
        "never",
        (128, 0, 3, 0, 0, 3, 1, 3),
    ),
]

# Rows derived by hand ----------------------------------------------------------
#
# (a) An explicit slot list with unaligned edges, mixed backing page sizes and
# two slots meeting inside one 4K table:
#   A: [0, 3MiB + 8KiB), 2M pages = GFNs [0, 770): the 2M page [0, 2MiB) lies
#      inside, [2MiB, 4MiB) does not: 1 2M leaf, 258 4K leaves (GFNs 512-769,
#      level-1 table 1).
#   B: [3MiB + 16KiB, +1GiB), 1G pages = GFNs [772, 262916): no 1G page lies
#      inside; 2M entries 2-512 do ([4MiB, 1GiB + 2MiB)): 511 2M leaves; the
#      head GFNs 772-1023 (252 4K leaves, the same level-1 table 1 as A's tail,
#      past a 4K hole at GFNs 770-771) and the tail 262656-262915 (260 4K
#      leaves, level-1 table 513).
#   C: [2GiB, 4GiB - 4KiB), 1G pages = GFNs [524288, 1048575): the 1G page
#      [2GiB, 3GiB); 2M entries 1536-2046 ([3GiB, 4GiB - 2MiB)): 511 2M leaves;
#      GFNs 1048064-1048574: 511 4K leaves (level-1 table 2047).
#   4K: 258 + 252 + 260 + 511 = 1281; 2M: 1 + 511 + 511 = 1023; 1G: 1; 2305
#   leaves.  Tables: the level-3 table under root entry 0; level-2 tables 0
#   ([0, 1GiB): A's 2M leaf, table 1, B's 2M leaves 2-511), 1 ([1GiB, 2GiB): B's
#   2M leaf 512 and table 513) and 3 ([3GiB, 4GiB): C's 2M leaves and table
#   2047); level-1 tables 1, 513, 2047: 7.
#   `root`, never: 128 visits, one operation clears all 2305 leaves.
#   `1G,root`, never: the 1G pass visits 128 root entries and the level-3
#     table's 512; the root pass 128: 768.  The 1G pass clears level-3 entries
#     0 (1 + 510 + 510 leaves, table 0's subtree), 1 (1 + 260), 2 (the 1G leaf)
#     and 3 (511 + 511 = 1022, the most).
#   `per_level`, never: the 4K pass visits 128 + 512 + 3 x 512 (level 2) + 3 x
#     512 (level 1) = 3712, the 2M pass 128 + 512 + 1536 = 2176, the 1G pass
#     640, the root pass 128: 6656; every leaf is cleared by a pass at its own
#     level, one per operation.
SLOTS_A_B_C = dict(
    memslots=[
        dict(gpa=0, size="3080KiB", page_size="2M"),
        dict(gpa="3088KiB", size="1GiB", page_size="1G"),
        dict(gpa="2GiB", size=(2 << 30) - 4096, page_size="1G"),
    ]
)
# (b) q35 under 2.75 GiB: 2.5 GiB of 2M pages.  lowmem is 2.75 GiB, so below =
# 2.5 GiB, above = 0: slots [0, 640KiB) (160 4K leaves) and [1MiB, 2.5GiB):
# GFNs 256-511 at 4K (256 leaves), 2M entries 1-1279 (1279 leaves).  416 4K +
# 1279 2M = 1695 leaves.  Tables: level 3 (1), level 2 [0, 1GiB), [1GiB, 2GiB),
# [2GiB, 3GiB) (3), level 1 [0, 2MiB) (1): 5.  The walk is that of section 13's
# rows (one level-3 table): 128 visits for `root`, 2044 visits and 765 yields
# for `1G,root` under always, whose worst operation removes the [0, 1GiB)
# table: 416 + 511 = 927 leaves.
Q35_2_5G_2M = dict(layout="q35", guest_memory="2560MiB", page_size="2M")
# (c) split_ratio=1: every 2M mapping of a 2M-backed flat 1 GiB guest is
# mapped at 4K: the same table as section 8's 4K guest (262,144 4K leaves in
# 512 level-1 tables, one level-2 and one level-3 table: 514), so the same
# counts, with leaves_4k = 262,144 and no 2M leaf.
SPLIT_ALL = dict(layout="flat", guest_memory="1GiB", page_size="2M", split_ratio=1.0)

OWN_ROWS = [
    LayoutRow("slots-root", SLOTS_A_B_C, "root", "never", (128, 0, 2305, 1281, 1023, 1, 7, 2305)),
    LayoutRow(
        "slots-two_pass", SLOTS_A_B_C, "1G,root", "never", (768, 0, 2305, 1281, 1023, 1, 7, 1022)
    ),
    LayoutRow(
        "slots-per_level", SLOTS_A_B_C, "per_level", "never", (6656, 0, 2305, 1281, 1023, 1, 7, 1)
    ),
    LayoutRow(
        "q35-2.5G-2M-root", Q35_2_5G_2M, "root", "never", (128, 0, 1695, 416, 1279, 0, 5, 1695)
    ),
    LayoutRow(
        "q35-2.5G-2M-two_pass",
        Q35_2_5G_2M,
        "1G,root",
        "always",
        (2044, 765, 1695, 416, 1279, 0, 5, 927),
    ),
    LayoutRow(
        "split-all-root", SPLIT_ALL, "root", "always", (255, 127, 262144, 262144, 0, 0, 514, 262144)
    ),
    LayoutRow(
        "split-all-two_pass",
        SPLIT_ALL,
        "1G,root",
        "always",
        (2044, 765, 262144, 262144, 0, 0, 514, 262144),
    ),
    LayoutRow(
        "split-all-per_level",
        SPLIT_ALL,
        "per_level",
        "never",
        (265216, 0, 262144, 262144, 0, 0, 514, 1),
    ),
]


@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("row", SECTION_13 + OWN_ROWS, ids=[r.name for r in SECTION_13 + OWN_ROWS])
def test_spec_section_13_and_derived_layout_rows(row: LayoutRow, engine: str) -> None:
    result = simulate(row.scenario(), engine=engine)
    assert tuple(getattr(result, f) for f in PART2_FIELDS) == row.expected
    assert result.removed_entries_scanned == 512 * result.tables_freed
    assert result.accessed_writebacks == result.dirty_writebacks == 0


def test_q35_slots_follow_pc_q35_init() -> None:
    """lowmem is 2 GiB from 2.75 GiB of RAM on, 2.75 GiB below it; RAM at
    [640KiB, 1MiB) is not mapped: a q35 guest maps M - 384 KiB."""
    for memory, below in [("8GiB", 2 << 30), ("2816MiB", 2 << 30), ("2GiB", 2 << 30)]:
        s = Scenario(layout="q35", guest_memory=memory, page_size="2M")
        slots = [(slot.gpa, slot.end) for slot in s.slots]
        assert slots[:2] == [(0, 640 << 10), (1 << 20, below)]
        above = s.guest_memory - below
        assert slots[2:] == ([(4 << 30, (4 << 30) + above)] if above else [])
        assert sum(slot.size for slot in s.slots) == s.guest_memory - (384 << 10)
    s = Scenario(layout="q35", guest_memory="2814MiB", page_size="2M")  # under 2.75 GiB
    assert [(slot.gpa, slot.end) for slot in s.slots] == [(0, 640 << 10), (1 << 20, 2814 << 20)]
