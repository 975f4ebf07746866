"""Small results datasets with known values for the report tests.

Written with pyarrow in the layout of the Parquet contract (hive partitions
``paging_levels=`` / ``strategy=``), independent of the engine.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MS = 1_000_000
S = 1_000_000_000
GIB = 1 << 30
TIB = 1 << 40

SCHEMA = pa.schema(
    [
        ("cell_id", pa.string()),
        ("paging_levels", pa.int64()),
        ("guest_memory", pa.int64()),
        ("page_size", pa.string()),
        ("populated_ratio", pa.float64()),
        ("accessed_ratio", pa.float64()),
        ("dirty_ratio", pa.float64()),
        ("zap_levels", pa.string()),
        ("vcpus", pa.int64()),
        ("host_phys_bits", pa.int64()),
        ("resched", pa.string()),
        ("resched_interval_us", pa.float64()),
        ("mmu_lock", pa.string()),
        ("flush_on_yield", pa.bool_()),
        ("rcu_stall_timeout_s", pa.float64()),
        ("seed", pa.int64()),
        ("strategy", pa.string()),
        ("visits", pa.int64()),
        ("yields", pa.int64()),
        ("leaf_zapped", pa.int64()),
        ("tables_freed", pa.int64()),
        ("removed_entries_scanned", pa.int64()),
        ("accessed_writebacks", pa.int64()),
        ("dirty_writebacks", pa.int64()),
        ("tlb_flushes", pa.int64()),
        ("max_op_leaves", pa.int64()),
        ("max_op_ns", pa.int64()),
        ("max_rcu_hold_ns", pa.int64()),
        ("total_ns", pa.int64()),
        ("rcu_stall", pa.bool_()),
        ("pending_free_peak_bytes", pa.int64()),
        ("ops", pa.int64()),
        ("engine", pa.string()),
        ("cost_model", pa.string()),
        ("engine_version", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("sim_seconds", pa.float64()),
        ("worker", pa.string()),
    ]
)

ZAP_LEVELS = {
    (4, "root"): "root",
    (4, "two_pass"): "1G,root",
    (4, "per_level"): "4K,2M,1G,root",
    (5, "root"): "root",
    (5, "two_pass"): "1G,root",
    (5, "upstream"): "4K,2M,1G,root",
    (5, "per_level"): "4K,2M,1G,512G,root",
}


def row(**kw) -> dict:
    """One result row; keyword arguments override the defaults below."""
    r = {
        "paging_levels": 4,
        "guest_memory": GIB,
        "page_size": "4K",
        "populated_ratio": 1.0,
        "accessed_ratio": 1.0,
        "dirty_ratio": 0.5,
        "vcpus": 1,
        "resched": "tick",
        "resched_interval_us": 1000.0,
        "mmu_lock": "write",
        "flush_on_yield": False,
        "rcu_stall_timeout_s": 21.0,
        "seed": 0,
        "strategy": "root",
        "visits": 128,
        "yields": 0,
        "leaf_zapped": 262144,
        "tables_freed": 514,
        "removed_entries_scanned": 263168,
        "accessed_writebacks": 0,
        "dirty_writebacks": 0,
        "tlb_flushes": 0,
        "max_op_leaves": 262144,
        "max_op_ns": 1 * MS,
        "max_rcu_hold_ns": 1 * MS,
        "total_ns": 1 * MS,
        "rcu_stall": False,
        "pending_free_peak_bytes": 0,
        "ops": 1,
        "engine": "reference",
        "cost_model": "seed-2022",
        "engine_version": "1",
        "status": "ok",
        "error": None,
        "sim_seconds": 0.01,
        "worker": "node-a",
    }
    r.update(kw)
    r.setdefault("host_phys_bits", {4: 46, 5: 52}[r["paging_levels"]])
    r.setdefault("zap_levels", ZAP_LEVELS.get((r["paging_levels"], r["strategy"]), r["strategy"]))
    if r["status"] == "error" and r["error"] is None:
        r["error"] = "RuntimeError: simulated failure"
    return r


def error_row(nulls: bool = True, **kw) -> dict:
    """A failed cell. With ``nulls`` its result fields are null, as the sweep
    writes them; without, they hold values that would change every aggregate
    if an error were ever counted as a result."""
    r = row(status="error", **kw)
    if nulls:
        for name in ("visits", "yields", "max_op_ns", "max_rcu_hold_ns", "total_ns", "rcu_stall"):
            r[name] = None
    return r


def write_dataset(rows: list[dict], results_dir: Path, files: int = 2) -> Path:
    """Write ``rows`` as a hive-partitioned dataset, spread over several files."""
    for i, r in enumerate(rows):
        r.setdefault("cell_id", f"cell-{i:04d}")
    for k in range(files):
        part = rows[k::files]
        if not part:
            continue
        table = pa.Table.from_pylist(part, schema=SCHEMA)
        pq.write_to_dataset(
            table,
            results_dir,
            partition_cols=["paging_levels", "strategy"],
            basename_template=f"batch-{k:03d}-{{i}}.parquet",
        )
    return results_dir
