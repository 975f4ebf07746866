"""Measured root zaps: reading a CSV or Parquet file into checked measurements.

One row per zap: the scenario columns (the fields of ``engine.Scenario``, with
``zap_levels`` or ``strategy``) and a measured ``total_ns`` and/or ``max_op_ns``.
A sweep's ``results/`` can be read too (its ok rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from engine import SCENARIO_FIELDS, Scenario, ScenarioError
from sweep.dataset import RunDir

OBSERVABLES = ("total_ns", "max_op_ns")
# Scenario columns a measurement must give: without them a row would silently
# take Scenario's defaults (a 1 GiB guest...).  The other Scenario fields
# (host_phys_bits, resched, resched_interval_us, mmu_lock, flush_on_yield,
# rcu_stall_timeout_s, seed) are optional and default as in Scenario.
REQUIRED_COLUMNS = (
    "paging_levels",
    "guest_memory",
    "page_size",
    "populated_ratio",
    "accessed_ratio",
    "dirty_ratio",
    "vcpus",
)
STRATEGY_COLUMNS = ("zap_levels", "strategy")  # either one


class CalibrationError(ValueError):
    """A measurement file or option that cannot be fitted; the message names it."""


@dataclass(frozen=True)
class Measurement:
    """One measured zap: ``row`` is 1-based in the file (header excluded)."""

    row: int
    scenario: Scenario
    total_ns: float | None
    max_op_ns: float | None


def read_table(path: str | Path) -> pl.DataFrame:
    """A CSV file, a Parquet file, or a directory of (hive-partitioned) Parquet."""
    p = Path(path)
    if not p.exists():
        raise CalibrationError(f"{p}: no such file or directory")
    try:
        if p.is_dir():
            files = RunDir.find(p).result_files()
            return pl.scan_parquet(files, hive_partitioning=True).collect()
        if p.suffix.lower() in (".parquet", ".pq"):
            return pl.read_parquet(p)
        if p.suffix.lower() in (".csv", ".txt"):
            return pl.read_csv(p, infer_schema_length=None)
    except pl.exceptions.PolarsError as e:
        raise CalibrationError(f"{p}: cannot read it: {e}") from e
    raise CalibrationError(f"{p}: unknown format {p.suffix!r}: give a .csv or .parquet file")


def _as_bool(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def parse_measurements(df: pl.DataFrame, source: str = "measurements") -> list[Measurement]:
    """Check the table and build one Measurement per row."""
    if "status" in df.columns:  # a sweep's results: keep the cells that ran
        df = df.filter(pl.col("status") == "ok")
    observed = [c for c in OBSERVABLES if c in df.columns]
    if not observed:
        raise CalibrationError(
            f"{source}: missing column: a measured 'total_ns' and/or 'max_op_ns' "
            f"(found {df.columns})"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if not any(c in df.columns for c in STRATEGY_COLUMNS):
        missing.append("zap_levels (or strategy)")
    if missing:
        raise CalibrationError(f"{source}: missing scenario column(s): {', '.join(missing)}")
    for col in observed:
        if not df.schema[col].is_numeric():
            raise CalibrationError(
                f"{source}: column {col!r} must hold numbers of nanoseconds, found {df.schema[col]}"
            )
    if df.height == 0:
        raise CalibrationError(f"{source}: no measurements (0 rows)")
    strategy_col = "zap_levels" if "zap_levels" in df.columns else "strategy"
    fields = [f for f in SCENARIO_FIELDS if f != "zap_levels" and f in df.columns]
    out = []
    for i, rec in enumerate(df.iter_rows(named=True), start=1):
        kwargs: dict[str, Any] = {}
        for f in [*fields, strategy_col]:
            value = rec[f]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if f in REQUIRED_COLUMNS or f == strategy_col:
                    raise CalibrationError(f"{source}: row {i}: column {f!r} is empty")
                continue
            if f == "flush_on_yield":
                value = _as_bool(value)
            kwargs["zap_levels" if f == strategy_col else f] = value
        try:
            scenario = Scenario(**kwargs)
        except ScenarioError as e:
            raise CalibrationError(
                f"{source}: row {i}: unknown scenario value {e.field}={e.value!r}: "
                f"allowed {e.allowed}"
            ) from e
        values = {}
        for col in OBSERVABLES:
            v = rec.get(col) if col in observed else None
            if v is None and col in observed and len(observed) == 1:
                raise CalibrationError(f"{source}: row {i}: measured {col} is empty")
            if v is not None:
                if not math.isfinite(v):
                    raise CalibrationError(f"{source}: row {i}: {col}={v} is not a time")
                if v < 0:
                    raise CalibrationError(
                        f"{source}: row {i}: negative time {col}={v}: times are ns >= 0"
                    )
            values[col] = None if v is None else float(v)
        if values["total_ns"] is None and values["max_op_ns"] is None:
            raise CalibrationError(f"{source}: row {i}: neither total_ns nor max_op_ns measured")
        out.append(Measurement(i, scenario, values["total_ns"], values["max_op_ns"]))
    return out
