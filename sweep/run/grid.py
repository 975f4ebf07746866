"""Grid expansion: axes -> cells, lazily.

A grid gives a list of values per Scenario field.  Cells are the Cartesian
product of the axes, where a ``zip`` group of axes moves together (values
paired by position), minus the cells an ``exclude`` rule matches.  A
combination the engine rejects (``ScenarioError``) is dropped and counted by
the field it names, never raised.  Nothing is materialised: ``expand`` is a
generator, so a grid of any size costs the driver O(axes) memory.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import SCENARIO_FIELDS, Scenario, ScenarioError

GRID_KEYS = ("zip", "exclude")
PARTITION_AXES = ("paging_levels", "zap_levels")


class GridError(ValueError):
    """The grid itself is malformed (not one cell of it): names the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"grid.{key}: {message}")


@dataclass
class GridCounts:
    """What expansion did with the combinations it generated."""

    combinations: int = 0
    excluded: int = 0
    invalid: int = 0
    invalid_by_field: Counter = field(default_factory=Counter)

    @property
    def valid(self) -> int:
        return self.combinations - self.excluded - self.invalid

    def to_dict(self) -> dict[str, Any]:
        return {
            "combinations": self.combinations,
            "excluded": self.excluded,
            "invalid": self.invalid,
            "invalid_by_field": dict(sorted(self.invalid_by_field.items())),
            "valid": self.valid,
        }


@dataclass(frozen=True)
class Axis:
    """One independent dimension of the product: one axis or a zip group."""

    names: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]  # one tuple of values per position


def _as_list(key: str, value: Any) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        value = [value]  # a scalar override (grid.vcpus=8) is a one-value axis
    return list(value)


def _rules(grid: Mapping[str, Any], key: str, allowed: str) -> list:
    value = grid.get(key) or []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise GridError(key, f"{value!r} is not {allowed}")
    return list(value)


def grid_axes(grid: Mapping[str, Any]) -> list[Axis]:
    """Check the grid's shape and return its independent axes, in field order."""
    unknown = [k for k in grid if k not in SCENARIO_FIELDS and k not in GRID_KEYS]
    if unknown:
        raise GridError(unknown[0], f"not a Scenario field; axes are {list(SCENARIO_FIELDS)}")
    values = {name: _as_list(name, grid[name]) for name in SCENARIO_FIELDS if name in grid}
    for name, vals in values.items():
        if not vals:
            raise GridError(name, "an axis needs at least one value")

    group_of: dict[str, tuple[str, ...]] = {}
    for i, group in enumerate(_rules(grid, "zip", "a list of groups of axis names")):
        names = tuple(_as_list(f"zip[{i}]", group))
        for name in names:
            if not isinstance(name, str) or name not in values:
                raise GridError(f"zip[{i}]", f"{name!r} is not an axis of this grid")
            if name in group_of:
                raise GridError(f"zip[{i}]", f"{name!r} is already in another zip group")
            group_of[name] = names
        lengths = {name: len(values[name]) for name in names}
        if len(set(lengths.values())) > 1:
            raise GridError(f"zip[{i}]", f"zipped axes need equal lengths, got {lengths}")

    for i, rule in enumerate(_rules(grid, "exclude", "a list of mappings axis -> value(s)")):
        if not isinstance(rule, Mapping) or not rule:
            raise GridError(f"exclude[{i}]", "a rule is a non-empty mapping axis -> value(s)")
        for name in rule:
            if name not in SCENARIO_FIELDS:
                raise GridError(f"exclude[{i}]", f"{name!r} is not a Scenario field")

    axes, seen = [], set()
    # The partition keys vary slowest, so a batch of consecutive cells mostly
    # falls in one (paging_levels, strategy) partition: one file per batch.
    order = [n for n in PARTITION_AXES if n in values] + [
        n for n in values if n not in PARTITION_AXES
    ]
    for name in order:
        names = group_of.get(name, (name,))
        if names in seen:
            continue
        seen.add(names)
        axes.append(Axis(names, tuple(zip(*(values[n] for n in names), strict=True))))
    return axes


def grid_size(grid: Mapping[str, Any]) -> int:
    """Number of combinations before exclusion and validation."""
    return math.prod(len(axis.values) for axis in grid_axes(grid))


def combinations(grid: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The raw combinations (field -> value as written), lazily: paging_levels,
    then zap_levels, then the other axes in field order, the last fastest."""
    axes = grid_axes(grid)
    names = [name for axis in axes for name in axis.names]
    for choice in itertools.product(*(axis.values for axis in axes)):
        yield dict(zip(names, itertools.chain.from_iterable(choice), strict=True))


def _matches(rule: Mapping[str, Any], cell: Mapping[str, Any]) -> bool:
    for name, want in rule.items():
        if name not in cell:
            return False
        wanted = want if isinstance(want, Sequence) and not isinstance(want, str) else [want]
        if cell[name] not in list(wanted):
            return False
    return True


def is_excluded(cell: Mapping[str, Any], rules: Sequence[Mapping[str, Any]]) -> bool:
    return any(_matches(rule, cell) for rule in rules)


def expand(grid: Mapping[str, Any], counts: GridCounts | None = None) -> Iterator[Scenario]:
    """Valid scenarios of the grid, lazily; ``counts`` tallies what was dropped."""
    counts = counts if counts is not None else GridCounts()
    rules = list(grid.get("exclude") or [])
    for cell in combinations(grid):
        counts.combinations += 1
        if rules and is_excluded(cell, rules):
            counts.excluded += 1
            continue
        try:
            scenario = Scenario(**cell)
        except ScenarioError as err:
            counts.invalid += 1
            counts.invalid_by_field[err.field] += 1
            continue
        yield scenario
