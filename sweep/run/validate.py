"""Checks that run before Ray starts: every bad setting is named, with what is allowed.

``check_overrides`` looks at the command line's keys against the config schema
(Hydra names an unknown key but not the keys it knows); ``check_config`` checks
the composed settings and the grid's values.  A grid value that no cell of the
grid accepts (``vcpus=-1``, ``guest_memory=12TB``, a ``512G`` zap level in a
grid of 4-level paging only) is an error naming the axis; a value that only some
combinations reject (``512G`` alongside 4- and 5-level paging) is fine: those
cells are dropped and counted.  ``probe_output`` writes (and fsyncs) a probe
where the results go, so a full or read-only disk fails here, not mid-sweep.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import math
import os
import typing
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from engine import ENGINES, ScenarioError
from sweep.dataset import RunDir
from sweep.dataset.layout import RESERVED

from .config import SweepConfig
from .grid import Axis, grid_axes, is_excluded, scenario_of

# retry=errors: run again the cells whose row is an error (sweep.run.retry).
RETRY_MODES = ("errors",)
# Combinations looked at, at most, to prove that a grid value is never valid.
SEARCH_LIMIT = 20_000
PROBE_BYTES = 1 << 20
RAY_MIN_OBJECT_STORE = 78_643_200  # Ray refuses less than 75 MiB


class ConfigError(ValueError):
    """A setting holds a value zapsweep does not allow: names the key and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str, message: str | None = None):
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(message or f"{key}={value!r} is invalid: allowed {allowed}")


class InventoryError(ConfigError):
    """A fleet inventory's row holds a value zapsweep does not allow: names
    the file's row (and line), the column and what is allowed."""

    def __init__(self, where: str, column: str | None, value: Any, allowed: str):
        self.where, self.column = where, column
        at = f"{where}, column {column!r}" if column is not None else where
        shown = f": {value!r} is invalid" if value is not None else ""
        super().__init__(
            f"inventory.{column}" if column else "inventory",
            value,
            allowed,
            f"inventory {at}{shown}: allowed {allowed}",
        )


def unknown_key(key: str, allowed: str) -> ConfigError:
    return ConfigError(key, None, allowed, f"unknown key {key!r}: allowed {allowed}")


class OutputError(OSError):
    """The results cannot be written where the run was asked to put them."""

    def __init__(self, where: Path, err: OSError):
        self.where = where
        reason = err.strerror or str(err)
        full = err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        advice = "free some space or choose" if full else "allowed"
        super().__init__(
            err.errno,
            f"cannot write results under {where}: {reason}; {advice} a writable directory "
            "with room for the results (hydra.run.dir=..., results_dir=...); nothing was run",
        )

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno n]"
        return self.strerror


# The command line ---------------------------------------------------------------


_FLAGS_WITH_VALUE = {
    "-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name",
    "-cd", "--config-dir", "--info", "--experimental-rerun",
}  # fmt: skip


def check_overrides(args: Sequence[str]) -> None:
    """Refuse command-line keys the schema does not have, listing the ones it has."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for i, arg in enumerate(args):
        if arg.startswith("-") or (i and args[i - 1] in _FLAGS_WITH_VALUE):
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception as err:  # Hydra's grammar: say which argument, and where
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                "override",
                arg,
                "key=value (Hydra's override grammar)",
                f"cannot parse {arg!r}: {reason}; allowed key=value, with lists as [a,b] "
                "(Hydra's override grammar)",
            ) from None
        if override.package is not None:
            continue
        key = override.key_or_group
        if key == "hydra" or key.startswith("hydra."):
            continue
        _check_key_path(key.split("."))


def _check_key_path(parts: list[str]) -> None:
    node: Any = SweepConfig
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            if typing.get_origin(node) in (dict, list) or node is Any:
                return  # a mapping or a list of any shape (cost_model, exclude): no schema
            key = ".".join(parts[:i])
            raise unknown_key(".".join(parts), f"none: {key} is a plain value, not a group")
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names:
            prefix = ".".join(parts[:i])
            key = f"{prefix}.{part}" if prefix else part
            where = f"keys of {prefix}" if prefix else "top-level keys"
            raise unknown_key(key, f"{where}: {names}")
        node = typing.get_type_hints(node)[part]


# The composed config ------------------------------------------------------------


def check_config(cfg: Mapping[str, Any], rows: Axis | None = None) -> None:
    """Check settings and grid (a plain dict of the composed config), with
    an inventory's ``rows`` when there is one."""
    check_settings(cfg)
    check_grid(cfg["grid"], rows)


def check_settings(cfg: Mapping[str, Any]) -> None:
    if cfg["engine"] not in ENGINES:  # the engine's own error, as simulate() would raise
        raise ScenarioError("engine", cfg["engine"], f"one of {list(ENGINES)}")
    batch, ray, progress = cfg["batch"], cfg["ray"], cfg["progress"]
    _int_or_none("batch.size", batch["size"], 1)
    _int_or_none("batch.max_in_flight", batch["max_in_flight"], 1)
    _int_or_none("ray.num_cpus", ray["num_cpus"], 1)
    _int_or_none("ray.object_store_memory", ray["object_store_memory"], RAY_MIN_OBJECT_STORE)
    _int_or_none("ray.max_retries", ray["max_retries"], 0, none_ok=False)
    _int_or_none("max_failures", cfg.get("max_failures"), 1)
    if cfg.get("retry") not in (None, *RETRY_MODES):
        raise ConfigError("retry", cfg["retry"], f"null or one of {list(RETRY_MODES)}")
    address = ray["address"]
    if address is not None and (not address.strip() or any(c.isspace() for c in address)):
        raise ConfigError(
            "ray.address", address, "null (local Ray), 'auto', 'host:port' or 'ray://host:port'"
        )
    for key, value in (
        ("progress.log_interval_s", progress["log_interval_s"]),
        ("ray.connect_timeout_s", ray["connect_timeout_s"]),
    ):
        if isinstance(value, bool) or not (
            isinstance(value, (int, float)) and math.isfinite(value) and value > 0
        ):
            raise ConfigError(key, value, "a finite number of seconds > 0")
    results = cfg["results_dir"]
    parts = PurePath(results).parts if isinstance(results, str) else ()
    if not parts or ".." in parts or (parts and parts[-1] in RESERVED):
        raise ConfigError(
            "results_dir",
            results,
            f"a directory name or path without '..', not one of {list(RESERVED)}",
        )


def _int_or_none(key: str, value: Any, lo: int, *, none_ok: bool = True) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        allowed = f"an integer >= {lo}" + (" or null" if none_ok else "")
        raise ConfigError(key, value, allowed)


def check_grid(grid: Mapping[str, Any], rows: Axis | None = None) -> None:
    """Refuse a grid with no valid cell, or with a value no cell of it accepts
    (an inventory row none accepts: named by its row and column)."""
    axes = grid_axes(grid, rows)  # the shape: unknown axes, empty axes, zip, exclude
    rules = list(grid.get("exclude") or [])

    errors: Counter[str] = Counter()
    first_error: dict[str, tuple[ScenarioError, tuple[int, ...]]] = {}
    base = None
    for n, pick in enumerate(_search_order(axes)):
        if n >= SEARCH_LIMIT:
            return  # too big to prove anything cheaply; expansion counts the drops
        ok, err = _try(axes, pick, rules)
        if ok:
            base = pick
            break
        if err is not None:
            errors[err.field] += 1
            first_error.setdefault(err.field, (err, pick))
    if base is None:
        if not errors:
            raise ConfigError("grid.exclude", rules, "rules that leave at least one cell")
        field, _ = errors.most_common(1)[0]
        err, pick = first_error[field]
        for a, axis in enumerate(axes):
            if axis.labels is not None and field in axis.names:
                raise InventoryError(axis.labels[pick[a]], field, err.value, err.allowed)
        raise ConfigError(
            f"grid.{field}",
            err.value,
            f"{err.allowed} (no cell of this grid is valid; invalid cells by field: "
            f"{dict(errors)})",
        )
    for a, axis in enumerate(axes):
        for j in range(len(axis.values)):
            if j != base[a]:
                _check_value(axes, rules, base, a, j)


def _search_order(axes: Sequence[Axis]):
    """The combinations to look for a valid one among: an inventory's rows
    with the other axes' first values first (one bad row must not hide the
    others), then the whole product, the last axis fastest."""
    for a, axis in enumerate(axes):
        if axis.labels is not None:
            for j in range(len(axis.values)):
                yield tuple(j if b == a else 0 for b in range(len(axes)))
    yield from itertools.product(*(range(len(axis.values)) for axis in axes))


def _cell(axes: Sequence[Axis], pick: Sequence[int]) -> dict[str, Any]:
    cell: dict[str, Any] = {}
    for axis, j in zip(axes, pick, strict=True):
        cell.update(zip(axis.names, axis.values[j], strict=True))
    return cell


def _try(axes, pick, rules) -> tuple[bool, ScenarioError | None]:
    """(valid, error): an excluded cell is (False, None)."""
    cell = _cell(axes, pick)
    if rules and is_excluded(cell, rules):
        return False, None
    try:
        scenario_of(cell)
    except ScenarioError as err:
        return False, err
    return True, None


def _check_value(axes, rules, base, a: int, j: int) -> None:
    """Raise unless value ``j`` of axis ``a`` is valid in some cell of the grid."""
    pick = list(base)
    pick[a] = j
    ok, err = _try(axes, pick, rules)
    if ok:
        return
    blame = err
    # One other axis changed at a time: finds the usual partner (paging depth for
    # a zap level, accessed_ratio for dirty_ratio, page size for guest memory).
    for b, axis in enumerate(axes):
        if b == a:
            continue
        for k in range(len(axis.values)):
            if k != base[b]:
                ok, _ = _try(axes, [*pick[:b], k, *pick[b + 1 :]], rules)
                if ok:
                    return
    others = [range(len(x.values)) if b != a else (j,) for b, x in enumerate(axes)]
    for n, trial in enumerate(itertools.product(*others)):
        if n >= SEARCH_LIMIT:
            return  # undecided: expansion will drop and count what is invalid
        ok, err = _try(axes, trial, rules)
        if ok:
            return
        if blame is None or (err is not None and err.field in axes[a].names):
            blame = err or blame
    axis = axes[a]
    name = blame.field if blame is not None and blame.field in axis.names else axis.names[0]
    value = dict(zip(axis.names, axis.values[j], strict=True))[name]
    if blame is not None and blame.field not in axis.names:  # the partner is refused
        raise ConfigError(
            f"grid.{name}",
            value,
            blame.allowed,
            f"grid.{name}={value!r} is invalid: no cell of this grid accepts it, as with it "
            f"{blame}",
        )
    allowed = blame.allowed if blame is not None else "a value some cell accepts"
    if axis.labels is not None:
        raise InventoryError(
            axis.labels[j], name, value, f"{allowed} (with every cell of the grid)"
        )
    raise ConfigError(f"grid.{name}", value, f"{allowed} (no cell of this grid accepts it)")


# The output directory -------------------------------------------------------------


def missing_parents(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, the deepest first."""
    out = []
    for p in (path, *path.parents):
        if p.exists():
            break
        out.append(p)
    return out


def check_run_dir(path: Path) -> None:
    """Refuse a run directory that cannot be created, or written, before Hydra
    tries to write its config there: create it (and remove again what this made)."""
    created = missing_parents(path)
    probe = path / f".probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(
            "hydra.run.dir",
            str(path),
            "a directory that can be created and written",
            f"hydra.run.dir={path}: cannot create or write the run directory ({reason}); "
            "allowed a path in a writable directory",
        ) from None
    finally:
        for p in created:
            try:
                p.rmdir()
            except OSError:
                break


def probe_output(run: RunDir, nbytes: int = PROBE_BYTES) -> None:
    """Create the dataset's folder and the staging folder beside it (where result
    files are written before they are renamed in), and write, fsync and remove a
    probe there."""
    probe = run.staging / f"probe-{os.getpid()}"
    try:
        run.results.mkdir(parents=True, exist_ok=True)
        run.staging.mkdir(parents=True, exist_ok=True)
        try:
            with probe.open("wb") as f:
                f.write(b"\0" * nbytes)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as err:
        raise OutputError(run.results, err) from err
