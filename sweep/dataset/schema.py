"""The Parquet schema of a sweep's rows: the contract with the report.

Every Scenario field, ``strategy``, every ZapResult field, provenance, and
the VM's ``name`` when the sweep ran a fleet inventory.  On
disk ``paging_levels`` and ``strategy`` are hive partition keys (directory
names), so the files themselves hold ``FILE_SCHEMA``.

This module imports only pyarrow's core (not its datasets, nor pandas), so
that a worker can build its rows' record batch with it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from engine import RESULT_FIELDS, SCENARIO_FIELDS, Scenario, memslots_text

from .layout import PARTITION_COLUMNS

_SCENARIO_TYPES = {
    "paging_levels": pa.int64(),
    "guest_memory": pa.int64(),
    "page_size": pa.string(),
    "populated_ratio": pa.float64(),
    "accessed_ratio": pa.float64(),
    "dirty_ratio": pa.float64(),
    "zap_levels": pa.string(),
    "vcpus": pa.int64(),
    "host_phys_bits": pa.int64(),
    "resched": pa.string(),
    "resched_interval_us": pa.float64(),
    "mmu_lock": pa.string(),
    "flush_on_yield": pa.bool_(),
    "rcu_stall_timeout_s": pa.float64(),
    "seed": pa.int64(),
    "layout": pa.string(),
    "memslots": pa.string(),  # engine.memslots_text: canonical JSON, null for a preset layout
    "split_ratio": pa.float64(),
    "smm_populated_ratio": pa.float64(),
    "root_zap": pa.string(),
    "kernel": pa.string(),  # a preset's name, null for none
    "trigger": pa.string(),
    "ad_writeback": pa.bool_(),
    "preempt": pa.string(),
    "lock_contention_us": pa.float64(),  # null: no waiter for mmu_lock
    "flush_on_remove": pa.bool_(),
}
assert set(_SCENARIO_TYPES) == set(SCENARIO_FIELDS), "schema out of step with engine.Scenario"

# Scenario fields typed float: float64 columns, so a ratio given as 1 is
# written as 1.0 (and hashed as 1.0: the cell id sees the columns).
FLOAT_FIELDS = frozenset(n for n, t in _SCENARIO_TYPES.items() if pa.types.is_floating(t))
assert FLOAT_FIELDS == {
    f.name for f in dataclasses.fields(Scenario) if f.type in ("float", float, "float | None")
}, "float columns out of step with engine.Scenario's field types"

ROW_SCHEMA = pa.schema(
    [pa.field("cell_id", pa.string(), nullable=False)]
    # the VM's name, from a fleet inventory (null without one)
    + [pa.field("name", pa.string())]
    + [pa.field(name, _SCENARIO_TYPES[name]) for name in SCENARIO_FIELDS]
    + [pa.field("strategy", pa.string())]
    + [pa.field(name, pa.bool_() if name == "rcu_stall" else pa.int64()) for name in RESULT_FIELDS]
    + [
        pa.field("engine", pa.string()),
        pa.field("cost_model", pa.string()),
        pa.field("engine_version", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("sim_seconds", pa.float64()),
        pa.field("worker", pa.string()),
    ]
)

FILE_SCHEMA = pa.schema([f for f in ROW_SCHEMA if f.name not in PARTITION_COLUMNS])


def scenario_columns(scenario: Scenario) -> dict[str, Any]:
    """The scenario as Parquet columns: zap_levels and memslots as text (the
    slot list in engine.memslots_text's one stable form, null for a preset
    layout), floats as floats."""
    row = scenario.to_dict()
    row["zap_levels"] = ",".join(scenario.zap_levels)
    row["memslots"] = memslots_text(scenario.memslots)
    for name in FLOAT_FIELDS:
        if row[name] is not None:
            row[name] = float(row[name])
    row["strategy"] = scenario.strategy
    return row


def scenario_from_columns(row: Mapping[str, Any]) -> Scenario:
    """The Scenario a row's columns describe: the inverse of
    :func:`scenario_columns` (``zap_levels`` and ``memslots`` read from their text)."""
    fields = {name: row[name] for name in SCENARIO_FIELDS if name in row}
    if isinstance(fields.get("memslots"), str):
        fields["memslots"] = json.loads(fields["memslots"])
    return Scenario(**fields)


def rows_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (dicts of ROW_SCHEMA's columns; a missing column is null) as an Arrow table."""
    return pa.Table.from_pylist(list(rows), schema=ROW_SCHEMA)
