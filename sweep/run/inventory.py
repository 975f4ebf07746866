"""A fleet inventory: the VMs to sweep, one row each, from a CSV or Parquet file.

Columns are Scenario fields (any of them: ``guest_memory``, ``vcpus``,
``page_size``, ...) and an optional ``name``, carried to the results.  Each
value is read as the grid's axis of that field is typed (``GridConfig``):
an integer, a number, true/false, text, or a YAML value for the rest.  The
inventory becomes one axis of the grid (``Inventory.axis``): its rows move
together, and the grid's own axes of the fields it sets are left out, so the
cells are the rows times the product of the other axes.

Every bad row is refused before Ray starts, naming the row (and, in a CSV,
its line), the column and what is allowed: here when a value cannot be read
or a name is missing or repeated; in ``validate.check_grid`` when no cell of
the grid accepts the row.
"""

from __future__ import annotations

import csv
import math
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from engine import SCENARIO_FIELDS

from .config import GridConfig
from .grid import Axis
from .validate import InventoryError

NAME = "name"
COLUMNS = (NAME, *SCENARIO_FIELDS)
SUFFIXES = (".csv", ".parquet")
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


def shipped_dir() -> Path:
    """conf/inventory/: the example inventories that ship with zapsweep."""
    return Path(str(resources.files("conf") / "inventory"))


def shipped() -> list[str]:
    return sorted(p.stem for p in shipped_dir().iterdir() if p.suffix in SUFFIXES)


def resolve(path: str | Path) -> Path:
    """A file ending in .csv or .parquet (relative to the working directory),
    or by a name without a suffix one of conf/inventory/ (``fleet`` is
    conf/inventory/fleet.csv), as cost models are named."""
    given = Path(path).expanduser()
    if given.suffix in SUFFIXES:
        if given.is_file():
            return given.resolve()
    else:
        for suffix in SUFFIXES:
            if (shipped_dir() / f"{given}{suffix}").is_file():
                return shipped_dir() / f"{given}{suffix}"
    raise InventoryError(
        str(path),
        None,
        None,
        f"an existing .csv or .parquet file, or one of the shipped inventories {shipped()}",
    )


def field_type(name: str) -> Any:
    """The type of one value of a field's grid axis (``list[int]`` -> int)."""
    if name == NAME:
        return str
    hints = typing.get_type_hints(GridConfig)
    if name not in hints:
        return Any
    (element,) = typing.get_args(hints[name]) or (Any,)
    return element


def convert(text: Any, kind: Any) -> tuple[bool, Any]:
    """(ok, value): one cell read as ``kind``; text as written in a CSV, or a
    value already typed (Parquet)."""
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(kind)
    )
    if optional:
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "null", "none")):
        return optional, None
    if not isinstance(text, str):
        if kind is float and isinstance(text, int) and not isinstance(text, bool):
            return True, float(text)
        if kind is int and isinstance(text, float) and math.isfinite(text) and text.is_integer():
            return True, int(text)
        base = typing.get_origin(kind) or kind  # list[dict] -> list
        fits = not isinstance(base, type) or isinstance(text, base)
        return fits and not (kind is int and isinstance(text, bool)), text
    text = text.strip()
    try:
        if kind is str:
            return True, text
        if kind is bool:
            low = text.lower()
            return (low in TRUE or low in FALSE), low in TRUE
        if kind is int:
            return True, int(text)
        if kind is float:
            return True, float(text)
        return True, yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        return False, text


KIND_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false"}


def describe(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = next(t for t in typing.get_args(kind) if t is not type(None))
        return f"{describe(inner)} or empty (the default)"
    return KIND_NAMES.get(kind, "a YAML value")


@dataclass(frozen=True)
class Inventory:
    """The rows of an inventory file, read and typed, with where each came from."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    labels: tuple[str, ...]  # "row 3 (line 5)", per row

    @classmethod
    def read(cls, path: str | Path) -> Inventory:
        where = resolve(path)
        if where.suffix == ".parquet":
            header, records, lines = read_parquet(where)
        elif where.suffix == ".csv":
            header, records, lines = read_csv(where)
        else:
            raise InventoryError(str(path), None, None, "a .csv or .parquet file")
        return cls.of(where, header, records, lines)

    @classmethod
    def of(cls, where: Path, header: list[str], records: list[list], lines: list[int] | None):
        file = where.name
        check_header(file, header)
        if not records:
            raise InventoryError(file, None, None, "at least one row (one VM)")
        labels = tuple(
            f"{file} row {i + 1}" + (f" (line {lines[i]})" if lines else "")
            for i in range(len(records))
        )
        kinds = [field_type(c) for c in header]
        rows = []
        for label, record in zip(labels, records, strict=True):
            if len(record) < len(header):
                missing = header[len(record)]
                raise InventoryError(label, missing, None, f"a value in each column {header}")
            if len(record) > len(header):
                extra = f"#{len(header) + 1} (past the header)"
                raise InventoryError(label, extra, record[len(header)], f"the columns {header}")
            row = []
            for column, kind, text in zip(header, kinds, record, strict=True):
                ok, value = convert(text, kind)
                if column == NAME and not value:
                    raise InventoryError(
                        label, NAME, text, "a name for every row, or no name column"
                    )
                if not ok:
                    raise InventoryError(label, column, text, describe(kind))
                row.append(value)
            rows.append(tuple(row))
        check_names(header, rows, labels)
        return cls(where, tuple(header), tuple(rows), labels)

    def axis(self) -> Axis:
        """The inventory as one axis of the grid: its columns move together."""
        return Axis(self.columns, self.rows, self.labels)

    def describe(self) -> dict[str, Any]:
        """What the manifest records of it."""
        return {"path": str(self.path), "rows": len(self.rows), "columns": list(self.columns)}


def check_header(file: str, header: list[str]) -> None:
    allowed = f"the columns {list(COLUMNS)}"
    seen = set()
    for column in header:
        if column not in COLUMNS:
            raise InventoryError(f"{file} header", column, None, allowed)
        if column in seen:
            raise InventoryError(f"{file} header", column, None, "each column once")
        seen.add(column)
    if not set(header) - {NAME}:
        raise InventoryError(f"{file} header", None, None, f"at least one of {list(COLUMNS[1:])}")


def check_names(header: list[str], rows: list[tuple], labels: tuple[str, ...]) -> None:
    """A name column names every row, each with its own name."""
    if NAME not in header:
        return
    at = header.index(NAME)
    first: dict[str, str] = {}
    for label, row in zip(labels, rows, strict=True):
        name = row[at]
        if name in first:
            raise InventoryError(label, NAME, name, f"a name of its own ({first[name]} has it)")
        first[name] = label


def read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows and their line numbers; lines starting with '#' and blank
    lines are comments."""
    with path.open(newline="", encoding="utf-8") as f:
        lines = (line for line in f)
        numbered = []
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                numbered.append((number, line))
    reader = csv.reader(line for _, line in numbered)
    table = [[cell.strip() for cell in row] for row in reader]
    if not table:
        raise InventoryError(path.name, None, None, "a header line naming the columns")
    return table[0], table[1:], [n for n, _ in numbered[1:]]


def read_parquet(path: Path) -> tuple[list[str], list[list], None]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # any unreadable file is the same error to the user
        raise InventoryError(path.name, None, None, f"a readable Parquet file ({err})") from err
    header = table.column_names
    return header, [list(r.values()) for r in table.to_pylist()], None


def read_inventory(path: str | Path | None) -> Inventory | None:
    return None if path is None else Inventory.read(path)


def path_override(arg: str) -> str:
    """``inventory=X`` on a command line is ``inventory.path=X``: Hydra sees
    conf/inventory/ as a config group, whose options would be YAML files."""
    key, sep, value = arg.partition("=")
    return f"inventory.path={value}" if key == "inventory" and sep else arg


__all__ = ["COLUMNS", "Inventory", "path_override", "read_inventory", "resolve", "shipped"]
