"""Grid expansion: product, zip, exclude, overrides, dropped invalid cells."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

import conf
from engine import SCENARIO_FIELDS, load_cost_model
from sweep.run.cells import RunSettings, cell_id, new_cells
from sweep.run.config import GridConfig, register_configs
from sweep.run.grid import (
    Grid,
    GridCounts,
    GridError,
    combinations,
    expand,
    grid_axes,
    grid_size,
)

register_configs()


def _compose(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_grid_axes_are_the_scenario_fields():
    axes = [f for f in GridConfig.__dataclass_fields__ if f not in ("zip", "exclude")]
    assert axes == list(SCENARIO_FIELDS)


def test_product_of_axes_last_axis_fastest():
    grid = {"vcpus": [1, 2, 3], "dirty_ratio": [0.0, 1.0], "seed": [7]}
    cells = list(combinations(grid))
    assert grid_size(grid) == 6
    assert len(cells) == 6
    # Axes in Scenario field order (partition keys first): dirty_ratio, vcpus, seed.
    assert [(c["dirty_ratio"], c["vcpus"]) for c in cells] == [
        (0.0, 1), (0.0, 2), (0.0, 3), (1.0, 1), (1.0, 2), (1.0, 3)
    ]  # fmt: skip
    assert all(c["seed"] == 7 for c in cells)


def test_zip_group_moves_together():
    grid = {
        "guest_memory": ["1GiB", "2GiB", "4GiB"],
        "vcpus": [1, 2, 4],
        "seed": [0, 1],
        "zip": [["guest_memory", "vcpus"]],
    }
    cells = list(combinations(grid))
    assert grid_size(grid) == 6
    assert {(c["guest_memory"], c["vcpus"]) for c in cells} == {
        ("1GiB", 1), ("2GiB", 2), ("4GiB", 4)
    }  # fmt: skip
    assert sorted(c["seed"] for c in cells) == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    ("grid", "key"),
    [
        ({"vcpus": [1, 2], "seed": [0], "zip": [["vcpus", "seed"]]}, "zip[0]"),
        ({"vcpus": [1], "zip": [["vcpus", "nope"]]}, "zip[0]"),
        ({"vcpus": [1], "seed": [0], "zip": [["vcpus"], ["vcpus", "seed"]]}, "zip[1]"),
        ({"vcpus": [1], "exclude": [{"vcpu": 1}]}, "exclude[0]"),
        ({"vcpus": []}, "vcpus"),
        ({"vcpu": [1]}, "vcpu"),
    ],
)
def test_malformed_grid_names_the_key(grid, key):
    with pytest.raises(GridError) as err:
        grid_axes(grid)
    assert err.value.key == key
    assert f"grid.{key}" in str(err.value)


def test_exclude_rules_match_every_entry_and_lists():
    grid = {
        "paging_levels": [4, 5],
        "zap_levels": ["root", "two_pass", "upstream"],
        "vcpus": [1, 8],
        "exclude": [
            {"paging_levels": 4, "zap_levels": "upstream"},  # both entries must match
            {"vcpus": [8], "zap_levels": ["root", "two_pass"]},  # lists: any of
        ],
    }
    counts = GridCounts()
    cells = [(s.paging_levels, s.strategy, s.vcpus) for s in expand(grid, counts)]
    assert counts.combinations == 12
    assert counts.excluded == 2 + 4  # (4, upstream, {1,8}) and ({4,5}, {root,two_pass}, 8)
    assert (4, "upstream", 1) not in cells and (4, "per_level", 1) not in cells
    assert (5, "upstream", 1) in cells and (5, "upstream", 8) in cells
    assert not [c for c in cells if c[2] == 8 and c[1] in ("root", "two_pass")]
    assert len(cells) == counts.valid == 6


def test_invalid_cells_are_dropped_and_counted_by_field():
    grid = {
        "paging_levels": [4, 5],
        "zap_levels": ["512G,root", "root"],  # 512G needs 5-level paging
        "accessed_ratio": [0.5],
        "dirty_ratio": [0.25, 1.0],  # dirty above accessed is impossible
    }
    counts = GridCounts()
    scenarios = list(expand(grid, counts))
    assert counts.combinations == 8
    # Scenario checks dirty_ratio before zap_levels: (4, 512G, 1.0) counts as dirty_ratio.
    assert counts.invalid_by_field == {"zap_levels": 1, "dirty_ratio": 4}
    assert counts.invalid == 5 and len(scenarios) == counts.valid == 3
    assert {(s.paging_levels, s.zap_levels) for s in scenarios} == {
        (4, ("root",)), (5, ("512G", "root")), (5, ("root",))
    }  # fmt: skip


def test_expansion_is_lazy():
    values = list(range(1, 101))
    grid = {
        "vcpus": values,
        "seed": values,
        "resched_interval_us": values,
        "rcu_stall_timeout_s": values,
        "host_phys_bits": [46] * 100,
        "dirty_ratio": [0.0] * 100,
    }
    assert grid_size(grid) == 10**12  # far too many to materialise
    first = next(expand(grid))
    assert (first.vcpus, first.seed) == (1, 1)


def test_presets_compose_and_have_their_sizes():
    sizes = {}
    for preset in ("smoke", "seed", "full"):
        cfg = _compose(f"grid={preset}")
        grid = OmegaConf.to_container(cfg.grid)
        counts = GridCounts()
        valid = sum(1 for _ in expand(grid, counts)) if preset != "full" else None
        sizes[preset] = (grid_size(grid), valid, counts)
    assert 24 <= sizes["smoke"][1] <= 100
    assert sizes["smoke"][2].invalid > 0  # it shows dropped combinations
    assert sizes["full"][0] >= 10**4
    seed_cfg = OmegaConf.to_container(_compose("grid=seed").grid)
    assert set(seed_cfg["paging_levels"]) == {4, 5}
    assert {"root", "two_pass", "per_level", "upstream"} <= set(seed_cfg["zap_levels"])
    assert min(seed_cfg["vcpus"]) == 1 and max(seed_cfg["vcpus"]) == 416
    assert set(seed_cfg["flush_on_yield"]) == {False, True}
    assert seed_cfg["guest_memory"][0] == "64GiB" and seed_cfg["guest_memory"][-1] == "16TiB"
    assert min(seed_cfg["dirty_ratio"]) == 0 and max(seed_cfg["dirty_ratio"]) == 1


GRIDS = sorted((Path(conf.__file__).parent / "grid").glob("*.yaml"))


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.stem)
def test_a_shipped_grid_states_its_true_size_first(path):
    """The header's first line: "# N combinations, M cells ..." (then the time it takes)."""
    first = path.read_text().splitlines()[0]
    m = re.match(r"# ([\d,]+) combinations, ([\d,]+) cells\b", first)
    assert m, first
    grid = yaml.safe_load(path.read_text())
    counts = GridCounts()
    valid = sum(1 for _ in expand(grid, counts))
    assert (int(m[1].replace(",", "")), int(m[2].replace(",", ""))) == (grid_size(grid), valid)
    assert re.search(
        r"(\d+|a) (s|seconds?|minutes?) on 2 cores",
        " ".join(line for line in path.read_text().splitlines() if line.startswith("#")),
    ), "the header states the time the grid takes"


def test_command_line_overrides_replace_axes():
    cfg = _compose("grid=smoke", "grid.vcpus=[1,64]", "grid.dirty_ratio=[0,1]", "engine=reference")
    assert list(cfg.grid.vcpus) == [1, 64]
    assert list(cfg.grid.dirty_ratio) == [0.0, 1.0]
    assert cfg.engine == "reference"
    grid = OmegaConf.to_container(cfg.grid)
    assert {s.vcpus for s in expand(grid)} == {1, 64}


def test_zip_and_exclude_from_the_command_line():
    cfg = _compose(
        "grid=smoke",
        "grid.guest_memory=[16MiB,64MiB]",
        "grid.vcpus=[1,8]",
        "grid.zip=[[guest_memory,vcpus]]",
        "grid.exclude=[{page_size:2M}]",
    )
    scenarios = list(expand(OmegaConf.to_container(cfg.grid)))
    assert {(s.guest_memory, s.vcpus) for s in scenarios} == {(16 << 20, 1), (64 << 20, 8)}
    assert {s.page_size for s in scenarios} == {"4K"}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("grid.vcpu=[1]", "vcpu"),  # misspelt axis
        ("grid.vcpus=[many]", "vcpus"),  # wrong type
        ("batch.sise=4", "sise"),
        ("ray.num_cpus=two", "num_cpus"),
    ],
)
def test_schema_rejects_wrong_keys_and_types_naming_them(override, key):
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        _compose(override)
    text = str(err.value) + str(err.value.__cause__)
    assert key in text


def test_cost_model_is_chosen_by_name_from_conf():
    from engine import load_cost_model

    cfg = _compose("cost_model=seed-2022")
    model = load_cost_model(OmegaConf.to_container(cfg.cost_model))
    assert model == load_cost_model("seed-2022")
    with pytest.raises(ConfigCompositionException) as err:
        _compose("cost_model=no-such-model")
    assert "cost_model" in str(err.value)


# The indexable grid: ranges, and duplicates told within a range ------------------------

SPELLED_TWICE = {
    "paging_levels": [4, 5],
    "guest_memory": ["16MiB", "16384KiB", "32MiB"],
    "zap_levels": ["per_level", "upstream", "4K,2M,1G,root", "4K,2M,1G,512G,root", "root"],
    "host_phys_bits": [None, 46, 52],
    "dirty_ratio": [0.5, 0.25],
    "exclude": [{"guest_memory": "16MiB", "zap_levels": "upstream"}],
}


def test_ranges_of_the_grid_are_its_combinations_in_order():
    grid = Grid.of(SPELLED_TWICE)
    whole = list(combinations(SPELLED_TWICE))
    assert grid.size == len(whole) == 2 * 3 * 5 * 3 * 2
    for size in (1, 7, 64, grid.size):
        pieces = [
            c for lo in range(0, grid.size, size) for _, c in grid.combinations(lo, lo + size)
        ]
        assert pieces == whole
    for i, (digits, cell) in enumerate(grid.combinations()):
        assert grid.index(digits) == i and grid.digits(i) == digits and cell == whole[i]


def _first_occurrences(grid_spec: dict, settings) -> list[str]:
    """Cell ids in grid order, each at its first valid, not excluded combination."""
    seen: dict[str, None] = {}
    for scenario in expand(grid_spec):
        seen.setdefault(cell_id(scenario, settings), None)
    return list(seen)


@pytest.mark.parametrize("size", [1, 2, 5, 13, 1000])
def test_every_cell_runs_once_however_the_grid_is_cut(size):
    settings = RunSettings("fast", load_cost_model("seed-2022"))
    grid = Grid.of(SPELLED_TWICE)
    ran, duplicates, valid = [], 0, 0
    for lo in range(0, grid.size, size):
        cells, counts = new_cells(grid, settings, lo, lo + size, None)
        ran += [c.cell_id for c in cells]
        duplicates += counts.duplicates
        valid += counts.grid.valid
    expected = _first_occurrences(SPELLED_TWICE, settings)
    assert ran == expected  # each cell once, at its first combination, in grid order
    assert duplicates == valid - len(expected) > 0


def test_cells_already_done_are_skipped_by_their_keys():
    settings = RunSettings("fast", load_cost_model("seed-2022"))
    grid = Grid.of(SPELLED_TWICE)
    every, _ = new_cells(grid, settings, 0, grid.size, None)
    done = np.unique(np.array([int(c.cell_id, 16) for c in every[::3]], dtype=np.uint64))
    rest, counts = new_cells(grid, settings, 0, grid.size, done)
    assert [c.cell_id for c in rest] == [c.cell_id for i, c in enumerate(every) if i % 3]
    assert counts.resumed == len(done)


POOLS = {
    "paging_levels": [4, 5],
    "guest_memory": ["16MiB", "16384KiB", 16 << 20, "32MiB", "2MiB"],
    "page_size": ["4K", "2M"],
    "zap_levels": [
        "per_level",
        "upstream",
        "4K,2M,1G,root",
        "4K,2M,1G,512G,root",
        "root",
        "1G,root",
        "two_pass",
    ],  # fmt: skip
    "host_phys_bits": [None, 46, 52],
    "dirty_ratio": [0.5, 1, 1.0, 0.25],
    "resched_interval_us": [1000, 1000.0, 500],
}


@st.composite
def spelled_grids(draw):
    grid = {
        name: draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
        for name, pool in POOLS.items()
        if draw(st.booleans())
    }
    if grid and draw(st.booleans()):
        name = draw(st.sampled_from(sorted(grid)))
        grid["exclude"] = [{name: draw(st.sampled_from(grid[name]))}]
    return grid, draw(st.integers(min_value=1, max_value=40))


@settings(max_examples=150, deadline=None)
@given(spelled_grids())
def test_spellings_of_one_cell_run_once_wherever_the_ranges_cut(case):
    spec, size = case
    settings_ = RunSettings("reference", load_cost_model("seed-2022"))
    grid = Grid.of(spec)
    ran = []
    for lo in range(0, grid.size, size):
        ran += [c.cell_id for c in new_cells(grid, settings_, lo, lo + size, None)[0]]
    assert ran == _first_occurrences(spec, settings_)


# -- memory layouts as axes --------------------------------------------------------

SLOTS = [{"gpa": 0, "size": "640KiB"}, {"gpa": "1MiB", "size": "2047MiB", "page_size": "1G"}]


def test_a_slot_list_is_one_value_of_the_memslots_axis():
    one = Grid.of({"memslots": SLOTS})
    assert one.size == 1
    two = Grid.of({"memslots": [SLOTS, [{"gpa": 0, "size": "1GiB"}], None]})
    assert two.size == 3
    scenarios = [s for _, s in two.scenarios()]
    assert [s.layout for s in scenarios] == ["memslots", "memslots", "flat"]
    assert [s.guest_memory for s in scenarios] == [(640 << 10) + (2047 << 20), 1 << 30, 1 << 30]


def test_layout_axes_from_the_command_line():
    cfg = _compose(
        "grid=smoke",
        "grid.guest_memory=[null,2GiB]",
        "grid.page_size=[2M]",
        "grid.layout=[flat,q35]",
        "grid.split_ratio=[0,0.2]",
        "grid.memslots=[null,[{gpa:0,size:640KiB},{gpa:1MiB,size:2047MiB,page_size:1G}]]",
    )
    counts = GridCounts()
    cells = list(expand(OmegaConf.to_container(cfg.grid), counts))
    kinds = {(s.layout, s.guest_memory, s.split_ratio) for s in cells}
    assert kinds == {
        (layout, memory, split)
        for layout, memory in [("flat", 1 << 30), ("flat", 2 << 30), ("q35", 1 << 30)]
        + [("q35", 2 << 30), ("memslots", (640 << 10) + (2047 << 20))]
        for split in (0.0, 0.2)
    }
    # A slot list with a guest memory other than its total, and a preset
    # layout with a slot list, are dropped and counted by the field they name.
    assert counts.invalid_by_field["guest_memory"] > 0
    assert counts.invalid_by_field["layout"] > 0


def test_the_vms_grid_is_q35_guests_of_every_backing_page_size():
    grid = OmegaConf.to_container(_compose("grid=vms").grid)
    counts = GridCounts()
    cells = list(expand(grid, counts))
    assert counts.invalid == 0
    assert {s.layout for s in cells} == {"q35"}
    assert {s.page_size for s in cells} == {"4K", "2M", "1G"}
    assert {s.split_ratio for s in cells} == {0.0, 0.2}
    assert {s.strategy for s in cells} == {"root", "two_pass", "per_level", "upstream"}
    memories = sorted({s.guest_memory for s in cells})
    assert (memories[0], memories[-1]) == (16 << 30, 12 << 40)


def test_the_kernels_grid_is_every_preset_on_both_triggers_with_one_and_two_roots():
    from engine import available_kernels

    grid = OmegaConf.to_container(_compose("grid=kernels").grid)
    counts = GridCounts()
    cells = list(expand(grid, counts))
    assert counts.invalid == counts.excluded == 0 and len(cells) == 560
    assert {s.kernel for s in cells} == set(available_kernels())
    assert {s.trigger for s in cells} == {"memslot", "vm_destroy"}
    assert {len(s.roots) for s in cells} == {1, 2}
    assert {s.page_size for s in cells} == {"4K", "1G"} and {s.paging_levels for s in cells} == {
        4,
        5,
    }
    memories = sorted({s.guest_memory for s in cells})
    assert (memories[0], memories[-1]) == (64 << 30, 16 << 40)
    # Every cell zaps as its kernel does: nothing in the grid overrides a preset.
    for s in cells:
        fields = s.preset.scenario_fields(s.trigger)
        assert s.mmu_lock == fields["mmu_lock"] and s.root_zap == fields["root_zap"]
        assert s.ad_writeback is fields["ad_writeback"]
