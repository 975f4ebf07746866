"""Property-based fuzzing: Scenario validation, the grid expander and the pre-Ray
grid check never raise anything but their documented errors.

Documented: ``ScenarioError`` (a ValueError naming field, value, allowed) from
``Scenario``; ``GridError`` (naming ``grid.<key>``) for a malformed grid;
``ConfigError`` (naming ``grid.<axis>``) from ``sweep.validate.check_grid``.
The expander itself never raises ``ScenarioError``: it drops and counts.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import SCENARIO_FIELDS, Scenario, ScenarioError
from sweep.run.grid import GridCounts, GridError, expand, grid_axes, grid_size
from sweep.run.validate import ConfigError, check_grid

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values near and far from the valid ones, of every type a YAML file or an
# override can produce.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 4, 5, 32, 46, 52, 416, 2**63, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.0, 1e400, float("nan")]),
    st.text(max_size=12),
    st.sampled_from(
        [
            "4K",
            "2M",
            "1G",
            "512G",
            "root",
            "two_pass",
            "per_level",
            "upstream",
            "1G,root",
            "512G,root",
            "root,1G",
            "4K,2M,1G,root",
            "16MiB",
            "1GiB",
            "12TB",
            "-1GiB",
            "1e400",
            "0",
            "64GiB",
            "16TiB",
            "1PiB",
            "tick",
            "always",
            "never",
            "read",
            "write",
            "5.15",
            "6.6",
            "6.13",
            "kernel",
            "memslot",
            "vm_destroy",
            "voluntary",
            "lazy",
            "serial",
            "parallel",
            "",
        ]
    ),  # fmt: skip
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)
scenario_kwargs = st.dictionaries(
    st.sampled_from(SCENARIO_FIELDS), values, max_size=len(SCENARIO_FIELDS)
)


@SETTINGS
@given(scenario_kwargs)
def test_scenario_raises_only_scenario_error(kwargs):
    try:
        scenario = Scenario(**kwargs)
    except ScenarioError as err:
        assert err.field in SCENARIO_FIELDS
        assert err.allowed and str(err).startswith(f"{err.field}=")
        return
    assert isinstance(scenario.guest_memory, int) and scenario.guest_memory > 0
    assert scenario.zap_levels[-1] == "root"
    assert all(math.isfinite(getattr(scenario, f)) for f in ("dirty_ratio", "accessed_ratio"))


# Grids: mostly plausible axes with some bad values, plus malformed shapes.
axis_values = st.lists(scalars, min_size=0, max_size=3)
plausible = {
    "paging_levels": st.lists(st.sampled_from([4, 5, 3, 6]), min_size=1, max_size=2),
    "guest_memory": st.lists(
        st.sampled_from(["16MiB", "64MiB", "1GiB", "12TB", "-1GiB", "0", 2**21, 2**40]),
        min_size=1,
        max_size=2,
    ),
    "page_size": st.lists(st.sampled_from(["4K", "2M", "1G", "8K"]), min_size=1, max_size=2),
    "dirty_ratio": st.lists(
        st.sampled_from([0.0, 0.5, 1.0, -1.0, float("nan")]), min_size=1, max_size=2
    ),
    "accessed_ratio": st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=1, max_size=2),
    "zap_levels": st.lists(
        st.sampled_from(
            ["root", "two_pass", "per_level", "upstream", "512G,root", "bogus", "root,1G"]
        ),
        min_size=1,
        max_size=3,
    ),
    "vcpus": st.lists(st.sampled_from([1, 8, 416, 0, -3]), min_size=1, max_size=2),
}  # fmt: skip
names = st.sampled_from([*SCENARIO_FIELDS, "vcpu", "zip", "exclude"])


@st.composite
def grids(draw):
    grid = {name: draw(strategy) for name, strategy in plausible.items() if draw(st.booleans())}
    for _ in range(draw(st.integers(0, 2))):  # anything at all under any key
        grid[draw(names)] = draw(st.one_of(axis_values, scalars))
    if draw(st.booleans()):
        group = st.one_of(st.lists(names, max_size=3), names, scalars)
        grid["zip"] = draw(st.one_of(st.lists(group, max_size=2), scalars))
    if draw(st.booleans()):
        rule = st.dictionaries(names, st.one_of(scalars, axis_values), max_size=2)
        grid["exclude"] = draw(st.one_of(st.lists(st.one_of(rule, scalars), max_size=2), scalars))
    return grid


@SETTINGS
@given(grids())
def test_grid_expansion_raises_only_grid_error(grid):
    try:
        axes = grid_axes(grid)
    except GridError as err:
        assert str(err).startswith(f"grid.{err.key}:")
        return
    size = grid_size(grid)
    if size > 5000:
        return
    counts = GridCounts()
    cells = list(expand(grid, counts))
    assert all(isinstance(c, Scenario) for c in cells)
    assert counts.combinations == size
    assert counts.valid == len(cells)
    assert sum(counts.invalid_by_field.values()) == counts.invalid
    assert set(counts.invalid_by_field) <= set(SCENARIO_FIELDS)
    assert len(axes) <= len(SCENARIO_FIELDS)


@SETTINGS
@given(grids())
def test_pre_ray_grid_check_raises_only_documented_errors(grid):
    try:
        check_grid(grid)
    except GridError as err:
        assert str(err).startswith(f"grid.{err.key}:")
        return
    except ConfigError as err:
        assert err.key.startswith("grid.") and err.allowed
        assert err.key in str(err)
        return
    if grid_size(grid) <= 5000:
        # Accepted: then some cell is valid, and every value of every axis is
        # used by a valid cell (or sits in a zip group / is excluded everywhere).
        assert any(True for _ in expand(grid))
