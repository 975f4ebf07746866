"""The grid: axes -> combinations -> scenarios, lazily and by index.

A grid gives a list of values per Scenario field (for ``memslots``, a list
of slot lists; one slot list alone is one value).  Cells are the Cartesian
product of the axes, where a ``zip`` group of axes moves together (values
paired by position), minus the cells an ``exclude`` rule matches.  A
combination the engine rejects (``ScenarioError``) is dropped and counted by
the field it names, never raised.

Nothing is materialised.  ``Grid`` numbers the combinations 0..size-1 (the
last axis fastest) and expands any range of them on its own, so the driver
hands out index ranges and each worker expands its range: a grid of any size
costs the driver O(axes) memory and time.

A fleet inventory (``sweep.run.inventory``) is one more axis: its rows, a
zip group of its columns, replacing the grid's axes of those fields.  Its
``name`` column is a *label*: carried to the rows and part of a cell's
identity, not a Scenario field.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import SCENARIO_FIELDS, Scenario, ScenarioError

GRID_KEYS = ("zip", "exclude")
PARTITION_AXES = ("paging_levels", "zap_levels")
# Fields of a combination that are not Scenario fields: carried to the rows.
LABELS = ("name",)


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

    def add(self, other: GridCounts) -> None:
        """Add the counts of another range of the grid."""
        self.combinations += other.combinations
        self.excluded += other.excluded
        self.invalid += other.invalid
        self.invalid_by_field.update(other.invalid_by_field)

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
    """One independent dimension of the product: one axis or a zip group.
    ``labels`` name the positions where they come from a file (an
    inventory's rows), for messages."""

    names: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]  # one tuple of values per position
    labels: tuple[str, ...] | None = None


def _as_list(key: str, value: Any) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        value = [value]  # a scalar override (grid.vcpus=8) is a one-value axis
    elif key == "memslots" and value and all(isinstance(v, Mapping) for v in value):
        value = [value]  # one slot list is a one-value axis of memslots
    return list(value)


def _rules(grid: Mapping[str, Any], key: str, allowed: str) -> list:
    value = grid.get(key) or []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise GridError(key, f"{value!r} is not {allowed}")
    return list(value)


def grid_axes(grid: Mapping[str, Any], rows: Axis | None = None) -> list[Axis]:
    """Check the grid's shape and return its independent axes, in field order;
    ``rows`` (an inventory's axis) replaces the axes of the fields it sets."""
    unknown = [k for k in grid if k not in SCENARIO_FIELDS and k not in GRID_KEYS]
    if unknown:
        raise GridError(unknown[0], f"not a Scenario field; axes are {list(SCENARIO_FIELDS)}")
    set_by_rows = set(rows.names) if rows is not None else set()
    values = {
        name: _as_list(name, grid[name])
        for name in SCENARIO_FIELDS
        if name in grid and name not in set_by_rows
    }
    for name, vals in values.items():
        if not vals:
            raise GridError(name, "an axis needs at least one value")

    group_of: dict[str, tuple[str, ...]] = {}
    for i, group in enumerate(_rules(grid, "zip", "a list of groups of axis names")):
        names = tuple(_as_list(f"zip[{i}]", group))
        for name in names:
            if isinstance(name, str) and name in set_by_rows:
                raise GridError(f"zip[{i}]", f"{name!r} is set by the inventory, row by row")
            if not isinstance(name, str) or name not in values:
                raise GridError(
                    f"zip[{i}]", f"{name!r} is not an axis of this grid; allowed {list(values)}"
                )
            if name in group_of:
                raise GridError(f"zip[{i}]", f"{name!r} is already in another zip group")
            group_of[name] = names
        lengths = {name: len(values[name]) for name in names}
        if len(set(lengths.values())) > 1:
            raise GridError(
                f"zip[{i}]",
                f"zipped axes need equal lengths, got {lengths}: allowed axes with the same "
                "number of values (they are paired by position)",
            )

    for i, rule in enumerate(_rules(grid, "exclude", "a list of mappings axis -> value(s)")):
        if not isinstance(rule, Mapping) or not rule:
            raise GridError(f"exclude[{i}]", "a rule is a non-empty mapping axis -> value(s)")
        for name in rule:
            if name not in SCENARIO_FIELDS and name not in LABELS:
                raise GridError(
                    f"exclude[{i}]",
                    f"{name!r} is not a Scenario field; allowed {[*SCENARIO_FIELDS, *LABELS]}",
                )

    axes, seen = ([rows] if rows is not None else []), set()
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


# Combinations looked at, at most, to find a valid one to probe twins around.
PROBE_LIMIT = 20_000
# Axes of at most this many values are varied to probe twins (see Grid.twins).
CONTEXT_VALUES = 16


@dataclass(frozen=True)
class Grid:
    """The grid's combinations, numbered; any range of them expands on its own.

    Two combinations can make one scenario (``16MiB`` and ``16384KiB``;
    ``per_level`` and ``upstream`` under 4-level paging): then the cell runs
    once, as its first combination, and the others count as duplicates.
    ``twins`` says, per axis and value, which other values of the axis may
    make the same scenario, so that a range can tell a duplicate without
    seeing the rest of the grid.
    """

    axes: tuple[Axis, ...]
    rules: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of(cls, grid: Mapping[str, Any], rows: Axis | None = None) -> Grid:
        """Check the grid's shape (``GridError`` names the key) and number it;
        ``rows``, an inventory's axis, varies slowest."""
        return cls(tuple(grid_axes(grid, rows)), tuple(grid.get("exclude") or ()))

    @functools.cached_property
    def size(self) -> int:
        return math.prod(len(axis.values) for axis in self.axes)

    @functools.cached_property
    def _strides(self) -> tuple[int, ...]:
        strides, stride = [], 1
        for axis in reversed(self.axes):
            strides.append(stride)
            stride *= len(axis.values)
        return tuple(reversed(strides))

    def digits(self, index: int) -> list[int]:
        """The value index of each axis for combination ``index``."""
        return [index // s % len(a.values) for s, a in zip(self._strides, self.axes, strict=True)]

    def combination(self, digits: Sequence[int]) -> dict[str, Any]:
        """Field -> value as written, for one value index per axis."""
        cell: dict[str, Any] = {}
        for axis, j in zip(self.axes, digits, strict=True):
            cell.update(zip(axis.names, axis.values[j], strict=True))
        return cell

    def combinations(self, lo: int = 0, hi: int | None = None) -> Iterator[tuple[list[int], dict]]:
        """(digits, combination) for indices lo..hi-1, in order, the last axis fastest."""
        hi = self.size if hi is None else min(hi, self.size)
        if lo >= hi:
            return
        digits = self.digits(lo)
        sizes = [len(a.values) for a in self.axes]
        for _ in range(hi - lo):
            yield digits, self.combination(digits)
            digits = digits.copy()
            for a in range(len(digits) - 1, -1, -1):  # an odometer: carry leftwards
                digits[a] += 1
                if digits[a] < sizes[a]:
                    break
                digits[a] = 0

    def scenario(self, cell: Mapping[str, Any], counts: GridCounts | None = None):
        """The Scenario of a combination, or None when excluded or invalid (counted)."""
        if self.rules and is_excluded(cell, self.rules):
            if counts is not None:
                counts.excluded += 1
            return None
        try:
            return scenario_of(cell)
        except ScenarioError as err:
            if counts is not None:
                counts.invalid += 1
                counts.invalid_by_field[err.field] += 1
            return None

    @functools.cached_property
    def name_at(self) -> tuple[int, int] | None:
        """The axis holding the label ``name``, and its place in the axis."""
        for a, axis in enumerate(self.axes):
            if "name" in axis.names:
                return a, axis.names.index("name")
        return None

    def name(self, digits: Sequence[int]) -> str | None:
        """The label ``name`` of a combination (an inventory's VM), or None."""
        if self.name_at is None:
            return None
        a, i = self.name_at
        return self.axes[a].values[digits[a]][i]

    def scenarios(
        self, lo: int = 0, hi: int | None = None, counts: GridCounts | None = None
    ) -> Iterator[tuple[list[int], Scenario]]:
        """(digits, scenario) of the valid combinations of lo..hi-1; ``counts`` tallies."""
        for digits, cell in self.combinations(lo, hi):
            if counts is not None:
                counts.combinations += 1
            scenario = self.scenario(cell, counts)
            if scenario is not None:
                yield digits, scenario

    # Duplicates --------------------------------------------------------------------

    @functools.cached_property
    def twins(self) -> tuple[dict[int, tuple[int, ...]], ...]:
        """Per axis: value index -> the other values that made an equal scenario
        when put in its place, around some valid combination: the first one
        found, and it with one other axis changed at a time, for axes of at
        most CONTEXT_VALUES values (with a second one changed too when the
        first change alone is invalid).  Where one field's meaning depends on
        another's, the other is a small categorical axis (zap levels and the
        host's address bits on the paging depth), so those contexts find the
        twins that only some combinations make (``None`` and ``52`` host bits
        under 5-level paging)."""
        base = next(
            (d for d, _ in itertools.islice(self.scenarios(), PROBE_LIMIT)), None
        )  # the first valid combination
        found: list[dict[int, set[int]]] = [{} for _ in self.axes]
        if base is None:
            return tuple({} for _ in self.axes)
        contexts = [base] + [
            self._valid_around(base, b, k)
            for b, axis in enumerate(self.axes)
            if len(axis.values) <= CONTEXT_VALUES
            for k in range(len(axis.values))
            if k != base[b]
        ]
        for context in contexts:
            for a, axis in enumerate(self.axes):
                if len(axis.values) < 2:
                    continue
                made: dict[tuple, list[int]] = {}
                for j in range(len(axis.values)):
                    try:
                        key = cell_key(self.combination([*context[:a], j, *context[a + 1 :]]))
                    except ScenarioError:
                        continue
                    made.setdefault(key, []).append(j)
                for same in made.values():
                    for j in same:
                        if len(same) > 1:
                            found[a].setdefault(j, set()).update(k for k in same if k != j)
        return tuple({j: tuple(sorted(ks)) for j, ks in f.items()} for f in found)

    def _valid_around(self, base: list[int], b: int, k: int) -> list[int]:
        """``base`` with axis ``b`` at value ``k``, and if that is invalid, with
        one more axis changed so that it is valid (the first found): a
        value that needs a partner (4-level paging and a list without 512G)
        still gets a context of its own."""
        pick = [*base[:b], k, *base[b + 1 :]]
        if self.scenario(self.combination(pick)) is not None:
            return pick
        for c, axis in enumerate(self.axes):
            if c == b or len(axis.values) > CONTEXT_VALUES:
                continue
            for m in range(len(axis.values)):
                other = [*pick[:c], m, *pick[c + 1 :]]
                if m != pick[c] and self.scenario(self.combination(other)) is not None:
                    return other
        return pick

    def is_duplicate(
        self, digits: Sequence[int], scenario: Scenario, name: str | None = None
    ) -> bool:
        """Whether an earlier combination of the grid makes the same (valid,
        not excluded) scenario with the same name: then that one runs it, and
        this one is skipped."""
        choices = [
            (d, *self.twins[a].get(d, ())) for a, d in enumerate(digits)
        ]  # each axis: its value, then its twins
        if all(len(c) == 1 for c in choices):
            return False
        index = self.index(digits)
        for other in itertools.product(*choices):
            if self.index(other) >= index:
                continue
            cell = self.combination(other)
            if cell.get("name") == name and self.scenario(cell) == scenario:
                return True
        return False

    def index(self, digits: Sequence[int]) -> int:
        return sum(d * s for d, s in zip(digits, self._strides, strict=True))


def scenario_of(cell: Mapping[str, Any]) -> Scenario:
    """The Scenario of a combination, its labels left out."""
    if any(label in cell for label in LABELS):
        cell = {k: v for k, v in cell.items() if k not in LABELS}
    return Scenario(**cell)


def cell_key(cell: Mapping[str, Any]) -> tuple[Scenario, str | None]:
    """What makes a combination one cell: its Scenario and its name."""
    return scenario_of(cell), cell.get("name")


def grid_size(grid: Mapping[str, Any]) -> int:
    """Number of combinations before exclusion and validation."""
    return Grid.of(grid).size


def combinations(grid: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The raw combinations (field -> value as written), lazily: paging_levels,
    then zap_levels, then the other axes in field order, the last fastest."""
    for _, cell in Grid.of(grid).combinations():
        yield cell


def expand(grid: Mapping[str, Any], counts: GridCounts | None = None) -> Iterator[Scenario]:
    """Valid scenarios of the grid, lazily; ``counts`` tallies what was dropped."""
    counts = counts if counts is not None else GridCounts()
    for _, scenario in Grid.of(grid).scenarios(counts=counts):
        yield scenario
