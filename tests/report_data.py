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
        ("layout", pa.string()),
        ("memslots", pa.string()),
        ("split_ratio", pa.float64()),
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
        ("leaves_4k", pa.int64()),
        ("leaves_2m", pa.int64()),
        ("leaves_1g", pa.int64()),
        ("engine", pa.string()),
        ("cost_model", pa.string()),
        ("engine_version", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("sim_seconds", pa.float64()),
        ("worker", pa.string()),
    ]
)

# The columns added with kernels, triggers and roots (a dataset written
# before them has none).
KERNEL_SCHEMA = pa.schema(
    list(SCHEMA)
    + [
        ("kernel", pa.string()),
        ("trigger", pa.string()),
        ("smm_populated_ratio", pa.float64()),
        ("roots_zapped", pa.int64()),
        ("wall_ns", pa.int64()),
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
        "layout": "flat",
        "memslots": None,
        "split_ratio": 0.0,
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
        "leaves_4k": 262144,
        "leaves_2m": 0,
        "leaves_1g": 0,
        "engine": "reference",
        "cost_model": "seed-2022",
        "engine_version": "2",
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


def write_dataset(
    rows: list[dict], results_dir: Path, files: int = 2, schema: pa.Schema = SCHEMA
) -> Path:
    """Write ``rows`` as a hive-partitioned dataset, spread over several files."""
    for i, r in enumerate(rows):
        r.setdefault("cell_id", f"cell-{i:04d}")
    for k in range(files):
        part = rows[k::files]
        if not part:
            continue
        table = pa.Table.from_pylist(part, schema=schema)
        pq.write_to_dataset(
            table,
            results_dir,
            partition_cols=["paging_levels", "strategy"],
            basename_template=f"batch-{k:03d}-{{i}}.parquet",
        )
    return results_dir


def known_rows() -> list[dict]:
    """Four summary groups (4-level, 4K, 1 GiB, default fields); see test_report_summary."""
    return [
        # root: 4 ok cells, seeds 0..3
        *[
            row(
                strategy="root",
                seed=i,
                max_op_ns=op * MS,
                max_rcu_hold_ns=hold * MS,
                total_ns=tot * MS,
                visits=v,
                yields=y,
            )
            for i, (op, hold, tot, v, y) in enumerate(
                [
                    (10, 15, 100, 128, 0),
                    (20, 25, 200, 128, 0),
                    (30, 35, 300, 255, 127),
                    (40, 45, 400, 255, 127),
                ]
            )
        ],
        # two_pass: 3 ok cells and 2 errors that must not count
        row(strategy="two_pass", seed=0, max_op_ns=5 * MS, max_rcu_hold_ns=22 * S,
            rcu_stall=True, total_ns=300 * MS, visits=768, yields=0),
        row(strategy="two_pass", seed=1, max_op_ns=7 * MS, max_rcu_hold_ns=1 * S,
            total_ns=100 * MS, visits=2044, yields=765),
        row(strategy="two_pass", seed=2, max_op_ns=6 * MS, max_rcu_hold_ns=2 * S,
            total_ns=200 * MS, visits=1000, yields=100),
        error_row(strategy="two_pass", seed=3),
        error_row(nulls=False, strategy="two_pass", seed=4, max_op_ns=999 * S,
                  max_rcu_hold_ns=999 * S, rcu_stall=True, total_ns=1 * MS, visits=1,
                  yields=9999),
        # per_level with 8 vCPUs: only an error
        error_row(nulls=False, strategy="per_level", vcpus=8, max_op_ns=999 * S),
        # a custom level list, stored under strategy=2M%2Croot
        row(strategy="2M,root", max_op_ns=3 * MS, max_rcu_hold_ns=4 * MS, total_ns=9 * MS,
            visits=600, yields=2),
    ]  # fmt: skip


def shapes_rows() -> list[dict]:
    """5-level guests of 1, 4 and 16 TiB for the verdicts and the price of safety."""
    five = {"paging_levels": 5}
    rows = []
    # (strategy, memory TiB, max_op ms, rcu hold s, stall, total ms, extra fields)
    for strategy, tib, op, hold, stall, total, extra in [
        ("root", 1, 50, 0.05, False, 1000, {}),
        ("root", 4, 200, 10, False, 4000, {}),
        ("root", 4, 300, 12, False, 5000, {"dirty_ratio": 1.0}),  # no two_pass partner
        ("root", 16, 800, 30, True, 16000, {}),
        ("two_pass", 1, 40, 0.04, False, 1100, {}),
        ("two_pass", 4, 60, 0.06, False, 4800, {}),
        ("two_pass", 16, 90, 0.09, False, 24000, {}),
        ("two_pass", 1, 30, 0.03, False, 999, {"vcpus": 8}),  # no root partner
        ("upstream", 1, 20, 0.02, False, 2000, {}),
        ("upstream", 4, 150, 0.15, False, 8000, {}),  # over budget, then under again
        ("upstream", 16, 90, 0.09, False, 48000, {}),
        ("root", 1, 120, 1, False, 500, {"page_size": "2M"}),
        ("root", 4, 130, 25, True, 2000, {"page_size": "2M"}),
    ]:
        rows.append(
            row(
                **five,
                strategy=strategy,
                guest_memory=tib * TIB,
                max_op_ns=op * MS,
                max_rcu_hold_ns=int(hold * S),
                rcu_stall=stall,
                total_ns=total * MS,
                **extra,
            )
        )
    # Errors: a bigger guest that must not extend the verdict, and a cell that
    # matches root 1 TiB exactly and must not pair with anything.
    rows.append(error_row(nulls=False, **five, strategy="root", guest_memory=64 * TIB))
    rows.append(
        error_row(nulls=False, **five, strategy="root", guest_memory=1 * TIB, total_ns=1 * MS)
    )
    return rows


def layout_rows() -> list[dict]:
    """4-level 1G-backed guests of 1 and 4 TiB, flat and q35, split 0 and 0.2;
    see test_report_summary's layout tests."""
    rows = []
    # (layout, split, strategy, memory TiB, max_op ms, total ms)
    for layout, split, strategy, tib, op, total in [
        ("flat", 0.0, "root", 1, 40, 100),
        ("flat", 0.0, "root", 4, 90, 400),
        ("flat", 0.0, "two_pass", 1, 1, 110),
        ("flat", 0.0, "two_pass", 4, 2, 440),
        ("q35", 0.0, "root", 1, 60, 100),
        ("q35", 0.0, "root", 4, 150, 400),  # over the budget: q35 maps its edges at 4K
        ("q35", 0.0, "two_pass", 1, 3, 120),
        ("q35", 0.0, "two_pass", 4, 5, 480),
        ("q35", 0.2, "root", 1, 200, 300),
        ("q35", 0.2, "two_pass", 1, 8, 600),
    ]:
        rows.append(
            row(
                layout=layout,
                split_ratio=split,
                strategy=strategy,
                page_size="1G",
                guest_memory=tib * TIB,
                max_op_ns=op * MS,
                total_ns=total * MS,
            )
        )
    return rows


def kernel_rows() -> list[dict]:
    """Guests of 64 GiB, 1 TiB and 16 TiB on three kernels and both triggers,
    one and two roots, and a cell without a kernel; see test_report_summary's
    kernel tests."""
    rows = []
    # (kernel, trigger, memory GiB, max_op ms, rcu hold s, stall, roots, wall ms)
    for kernel, trigger, gib, op, hold, stall, roots, wall in [
        ("5.15", "memslot", 64, 900, 0.9, False, 1, 900),
        ("5.15", "memslot", 1024, 30_000, 30, True, 1, 30_000),
        ("5.15", "memslot", 1024, 30_000, 30, True, 2, 60_000),
        ("5.15", "memslot", 16384, 500_000, 500, True, 1, 500_000),
        ("5.15", "vm_destroy", 64, 800, 0.8, False, 1, 800),
        ("5.15", "vm_destroy", 1024, 15_000, 15, False, 1, 15_000),
        ("5.15", "vm_destroy", 16384, 230_000, 230, True, 1, 230_000),
        ("6.9", "memslot", 64, 0.01, 0.001, False, 2, 4_000),
        ("6.9", "memslot", 16384, 0.14, 0.001, False, 2, 600_000),
        ("6.13", "memslot", 64, 0.01, 0.001, False, 1, 2_000),
        ("6.13", "memslot", 16384, 0.14, 0.001, False, 1, 280_000),
        (None, "memslot", 16384, 800_000, 800, True, 1, 800_000),
    ]:
        rows.append(
            row(
                kernel=kernel,
                trigger=trigger,
                strategy={"5.15": "root", "6.9": "per_level", "6.13": "per_level"}.get(
                    kernel, "root"
                ),
                guest_memory=gib * GIB,
                max_op_ns=int(op * MS),
                max_rcu_hold_ns=int(hold * S),
                rcu_stall=stall,
                smm_populated_ratio=0.0 if roots == 1 else 1.0,
                roots_zapped=roots,
                wall_ns=wall * MS,
                total_ns=wall * MS * (2 if roots == 2 and kernel != "5.18" else 1),
            )
        )
    return rows
