"""The Parquet schema of a sweep's rows: the contract with the report.

Every Scenario field, ``strategy``, every ZapResult field, provenance.  On
disk ``paging_levels`` and ``strategy`` are hive partition keys (directory
names), so the files themselves hold ``FILE_SCHEMA``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from engine import RESULT_FIELDS, SCENARIO_FIELDS

from .cells import FLOAT_FIELDS

PARTITION_COLUMNS = ("paging_levels", "strategy")

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
}
assert set(_SCENARIO_TYPES) == set(SCENARIO_FIELDS), "schema out of step with engine.Scenario"

ROW_SCHEMA = pa.schema(
    [pa.field("cell_id", pa.string(), nullable=False)]
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

assert FLOAT_FIELDS == {name for name, t in _SCENARIO_TYPES.items() if pa.types.is_floating(t)}, (
    "sweep.cells.FLOAT_FIELDS out of step with the schema"
)


def rows_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """A batch's rows (sweep.cells.run_batch) as an Arrow table of ROW_SCHEMA."""
    return pa.Table.from_pylist(list(rows), schema=ROW_SCHEMA)
