"""Aggregate a results dataset: per-group latencies, verdicts, price of safety.

Every function takes a run directory, a ``results/`` dataset (hive-partitioned
by ``paging_levels`` and ``strategy``), a single Parquet file, ``Results``
(``open_results``: the files that passed the integrity check) or a
``polars.LazyFrame`` already scanned from one, and works on a lazy scan so
that only the columns an aggregate needs are read.

Rows whose ``status`` is not ``"ok"`` are never results: they count in the
``errors`` columns and in :func:`error_rows`, nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine import SCENARIO_FIELDS, TRIGGERS, available_kernels
from sweep.dataset import BadFile, RunDir, check_dataset
from sweep.dataset.layout import PARTITION_COLUMNS

DEFAULT_GROUP_KEYS: tuple[str, ...] = (
    "strategy",
    "paging_levels",
    "page_size",
    "guest_memory",
    "dirty_ratio",
    "vcpus",
    "flush_on_yield",
    "resched",
    "mmu_lock",
)
# Verdicts and the price of safety are judged per paging depth and page size,
# and per kernel, trigger, memory layout and split ratio where a dataset
# holds more than one (verdict_keys): a worst case over q35 and flat guests,
# or over 5.15 and 6.6, answers neither.
VERDICT_KEYS: tuple[str, ...] = ("paging_levels", "page_size", "strategy")
KERNEL_KEYS: tuple[str, ...] = ("kernel", "trigger")
LAYOUT_KEYS: tuple[str, ...] = ("layout", "split_ratio")
VERDICT_KEY_ORDER: tuple[str, ...] = (
    *KERNEL_KEYS,
    VERDICT_KEYS[0],
    *LAYOUT_KEYS,
    *VERDICT_KEYS[1:],
)
# What verdicts() says per group of VERDICT_KEYS, beside its counts and worst cases.
VERDICT_COLUMNS: tuple[str, ...] = (
    "largest_memory",
    "worst_op_at_largest_ns",
    "stall_at_largest",
    "under_budget_up_to",
    "over_budget_from",
    "stall_free_up_to",
    "stalls_from",
)
# The two hive partition columns come from directory names, not from the files.
HIVE_SCHEMA = {"paging_levels": pl.Int64, "strategy": pl.String}
assert tuple(HIVE_SCHEMA) == PARTITION_COLUMNS
# Display order: the kernel before the seed's patch, the patch, Linux >= 6.9, the reply.
STRATEGY_ORDER: tuple[str, ...] = ("root", "two_pass", "upstream", "per_level")
BASELINE_STRATEGY = "root"
# Cells of two strategies are the same cell when all of these match (plus
# engine and cost model, so that a mixed dataset never pairs different models).
CELL_MATCH_KEYS: tuple[str, ...] = tuple(f for f in SCENARIO_FIELDS if f != "zap_levels") + (
    "engine",
    "cost_model",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "cells",
    "errors",
    "worst_max_op_ns",
    "p99_max_op_ns",
    "median_max_op_ns",
    "worst_max_rcu_hold_ns",
    "stalls",
    "median_total_ns",
    "median_visits",
    "median_yields",
)
# Percentiles interpolate linearly between order statistics (numpy's and
# DuckDB's quantile_cont default), so they can be checked by hand.
QUANTILE_METHOD = "linear"


OK = pl.col("status") == "ok"


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Results:
    """A run's dataset as the report reads it: the good files, and those skipped."""

    run: RunDir
    files: tuple[Path, ...]
    skipped: tuple[BadFile, ...] = ()

    def scan(self) -> pl.LazyFrame:
        if not self.files:
            if self.skipped:
                raise FileNotFoundError(
                    f"no result file under {self.run.results} passed the integrity check "
                    f"({len(self.skipped)} skipped, e.g. {self.skipped[0].path}: "
                    f"{self.skipped[0].reason})"
                )
            raise FileNotFoundError(f"no Parquet files under {self.run.results}")
        return pl.scan_parquet(
            list(self.files),
            hive_partitioning=True,
            hive_schema=HIVE_SCHEMA,
            missing_columns="insert",
        )


def open_results(path: str | Path, check: bool = True) -> Results:
    """The dataset of a run directory, a ``results/`` folder or one Parquet file.

    With ``check`` every file is read in full first, page checksums included,
    and a bad one is skipped, not read (and never moved: reading changes
    nothing); ``Results.skipped`` says which and why.
    """
    run = RunDir.find(path)
    if not check:
        return Results(run, tuple(run.result_files()))
    found = check_dataset(run)
    bad = {b.path for b in found.bad}
    return Results(run, tuple(p for p in run.result_files() if p not in bad), tuple(found.bad))


Source = str | Path | pl.LazyFrame | Results


def scan(source: Source) -> pl.LazyFrame:
    """Lazy scan of a results dataset (or pass a LazyFrame through)."""
    if isinstance(source, pl.LazyFrame):
        return source
    if isinstance(source, Results):
        return source.scan()
    return open_results(source, check=False).scan()


# Sort orders for columns whose natural order is not alphabetical; unknown values go last.
DISPLAY_ORDER: dict[str, tuple[str, ...]] = {
    "strategy": STRATEGY_ORDER,
    "page_size": ("4K", "2M", "1G"),
    "layout": ("flat", "q35", "memslots"),
    "kernel": available_kernels(),  # by version, not as text ("6.13" after "6.9")
    "trigger": TRIGGERS,
}


def sort_groups(lf: pl.LazyFrame, keys: Sequence[str]) -> pl.LazyFrame:
    """Sort by ``keys``, named strategies and page sizes in DISPLAY_ORDER."""
    keys = list(keys)
    ranks = {
        k: pl.col(k)
        .replace_strict(
            {v: i for i, v in enumerate(order)}, default=len(order), return_dtype=pl.Int32
        )
        .alias(f"_rank_{k}")
        for k, order in DISPLAY_ORDER.items()
        if k in keys
    }
    order = []
    for k in keys:
        order += [f"_rank_{k}", k] if k in ranks else [k]
    return (
        lf.with_columns(*ranks.values())
        .sort(order, nulls_last=True)
        .drop([f"_rank_{k}" for k in ranks])
    )


# --------------------------------------------------------------------------- summary


def summarize(source: Source, group_keys: Sequence[str] = DEFAULT_GROUP_KEYS) -> pl.DataFrame:
    """Per-group aggregates of a results dataset (the content of summary.parquet).

    Per group: ``cells`` (ok results), ``errors``, worst / p99 / median
    ``max_op_ns``, worst ``max_rcu_hold_ns``, ``stalls`` (cells with
    ``rcu_stall``), median ``total_ns``, ``visits`` and ``yields``. A group
    holding only errors has ``cells == 0`` and null aggregates.
    """
    keys = list(group_keys)
    if not keys:
        raise ValueError("group_keys must name at least one column")
    lf = scan(source)
    missing = [k for k in keys if k not in lf.collect_schema().names()]
    if missing:
        raise ValueError(
            f"unknown group keys {missing}: allowed columns of the results dataset "
            f"({', '.join(lf.collect_schema().names())})"
        )

    def ok(name: str) -> pl.Expr:
        return pl.col(name).filter(OK)

    agg = lf.group_by(keys).agg(
        OK.sum().cast(pl.Int64).alias("cells"),
        (~OK).sum().cast(pl.Int64).alias("errors"),
        ok("max_op_ns").max().alias("worst_max_op_ns"),
        ok("max_op_ns").quantile(0.99, QUANTILE_METHOD).alias("p99_max_op_ns"),
        ok("max_op_ns").median().alias("median_max_op_ns"),
        ok("max_rcu_hold_ns").max().alias("worst_max_rcu_hold_ns"),
        ok("rcu_stall").sum().cast(pl.Int64).alias("stalls"),
        ok("total_ns").median().alias("median_total_ns"),
        ok("visits").median().alias("median_visits"),
        ok("yields").median().alias("median_yields"),
    )
    return sort_groups(agg, keys).collect()


# --------------------------------------------------------------------------- verdicts


def verdict_keys(source: Source) -> tuple[str, ...]:
    """VERDICT_KEYS, with the KERNEL_KEYS and LAYOUT_KEYS that take more than
    one value in the dataset, in VERDICT_KEY_ORDER (a dataset written before
    they existed has none: its rows are flat guests without a kernel)."""
    lf = scan(source)
    names = lf.collect_schema().names()
    present = [k for k in (*KERNEL_KEYS, *LAYOUT_KEYS) if k in names]
    varying = []
    if present:
        counts = lf.select(pl.col(k).n_unique() for k in present).collect().row(0)
        varying = [k for k, n in zip(present, counts, strict=True) if n > 1]
    return tuple(k for k in VERDICT_KEY_ORDER if k in VERDICT_KEYS or k in varying)


def memory_curve(source: Source, keys: Sequence[str] | None = None) -> pl.DataFrame:
    """Worst case per verdict group (``keys``, default verdict_keys) and
    guest memory (ok cells).

    The curve behind the verdicts and the latency-vs-memory plot.
    """
    keys = [*(keys or verdict_keys(source)), "guest_memory"]
    agg = (
        scan(source)
        .filter(OK)
        .group_by(keys)
        .agg(
            pl.len().cast(pl.Int64).alias("cells"),
            pl.col("max_op_ns").max().alias("worst_max_op_ns"),
            pl.col("max_rcu_hold_ns").max().alias("worst_max_rcu_hold_ns"),
            pl.col("rcu_stall").sum().cast(pl.Int64).alias("stalls"),
            pl.col("total_ns").median().alias("median_total_ns"),
        )
    )
    return sort_groups(agg, keys).collect()


def verdicts(
    source: Source, budget_ms: float = 100.0, keys: Sequence[str] | None = None
) -> pl.DataFrame:
    """Per paging depth, page size and strategy (and layout, split ratio:
    ``keys``, default verdict_keys): how large a guest stays safe.

    The worst operation of a guest memory is the largest ``max_op_ns`` over
    every ok cell of that memory (all other scenario fields included).

    - ``under_budget_up_to``: the largest tested guest memory such that it, and
      every smaller tested memory, has its worst operation strictly under the
      budget (null when even the smallest is over);
    - ``over_budget_from``: the smallest tested memory over budget (null if none);
    - ``stall_free_up_to`` / ``stalls_from``: the same for cells with an RCU stall;
    - ``largest_memory`` and ``worst_op_at_largest_ns`` / ``stall_at_largest``:
      the verdict at the largest guest tested.

    With results monotone in guest memory ``under_budget_up_to`` and
    ``over_budget_from`` are neighbours in the grid; otherwise the first is
    the conservative answer and the second shows where it broke.
    """
    budget_ns = budget_ms * 1e6
    lf = scan(source)
    group = list(keys or verdict_keys(lf))
    curve = memory_curve(lf, group).lazy()
    flagged = curve.sort("guest_memory").with_columns(
        (pl.col("worst_max_op_ns") >= budget_ns).alias("_over"),
        (pl.col("stalls") > 0).alias("_stall"),
    )
    flagged = flagged.with_columns(
        pl.col("_over").cast(pl.Int8).cum_max().over(group).cast(pl.Boolean).alias("_over_seen"),
        pl.col("_stall").cast(pl.Int8).cum_max().over(group).cast(pl.Boolean).alias("_stall_seen"),
    )
    mem = pl.col("guest_memory")
    per_group = flagged.group_by(group).agg(
        pl.col("cells").sum().alias("cells"),
        mem.max().alias("largest_memory"),
        pl.col("worst_max_op_ns").max().alias("worst_max_op_ns"),
        pl.col("worst_max_rcu_hold_ns").max().alias("worst_max_rcu_hold_ns"),
        pl.col("stalls").sum().alias("stalls"),
        pl.col("worst_max_op_ns").sort_by(mem).last().alias("worst_op_at_largest_ns"),
        pl.col("_stall").sort_by(mem).last().alias("stall_at_largest"),
        mem.filter(~pl.col("_over_seen")).max().alias("under_budget_up_to"),
        mem.filter(pl.col("_over")).min().alias("over_budget_from"),
        mem.filter(~pl.col("_stall_seen")).max().alias("stall_free_up_to"),
        mem.filter(pl.col("_stall")).min().alias("stalls_from"),
    )
    errors = lf.group_by(group).agg((~OK).sum().cast(pl.Int64).alias("errors"))
    out = (
        errors.join(per_group, on=group, how="left", nulls_equal=True)
        .with_columns(pl.col("cells").fill_null(0), pl.col("stalls").fill_null(0))
        .select(
            *group,
            "cells",
            "errors",
            "largest_memory",
            "worst_max_op_ns",
            "worst_max_rcu_hold_ns",
            "stalls",
            *VERDICT_COLUMNS[1:],  # [0], largest_memory, leads the worst cases above
        )
    )
    return sort_groups(out, group).collect()


def has_kernels(source: Source) -> bool:
    """Whether any ok cell of the dataset ran under a kernel preset."""
    lf = scan(source)
    if "kernel" not in lf.collect_schema().names():
        return False
    return bool(lf.filter(OK & pl.col("kernel").is_not_null()).select(pl.len()).collect().item())


def kernel_verdicts(source: Source, budget_ms: float = 100.0) -> pl.DataFrame:
    """verdicts() per kernel and trigger, worst over every other field (paging
    depth, page size, roots, ...): the largest guest without an RCU stall,
    and within the budget, on each kernel.  Cells without a kernel are left
    out; ``worst_wall_ns`` is the longest zap, roots and workers included."""
    lf = scan(source).filter(pl.col("kernel").is_not_null())
    out = verdicts(lf, budget_ms, KERNEL_KEYS)
    wall = (
        lf.filter(OK)
        .group_by(KERNEL_KEYS)
        .agg(pl.col("wall_ns").max().alias("worst_wall_ns"))
        .collect()
    )
    return out.join(wall, on=list(KERNEL_KEYS), how="left", maintain_order="left")


def price_of_safety(
    source: Source, baseline: str = BASELINE_STRATEGY, keys: Sequence[str] | None = None
) -> pl.DataFrame:
    """Total time of each strategy relative to ``baseline`` on the same cells.

    A cell of strategy S is paired with the baseline cell that matches it on
    every field of CELL_MATCH_KEYS present in the dataset (every scenario
    field but ``zap_levels``, plus engine and cost model). Per verdict group
    (``keys``, default verdict_keys): ``pairs``, the median / min / max of
    ``total_ns / baseline total_ns`` and ``total_ratio`` = sum over pairs of
    total_ns / sum of baseline total_ns.
    """
    lf = scan(source)
    names = lf.collect_schema().names()
    group = list(keys or verdict_keys(lf))
    match = [k for k in CELL_MATCH_KEYS if k in names]
    ok = lf.filter(OK).select(*match, "strategy", "total_ns")
    base = ok.filter(pl.col("strategy") == baseline).select(
        *match, pl.col("total_ns").alias("baseline_total_ns")
    )
    pairs = (
        ok.filter(pl.col("strategy") != baseline)
        .join(base, on=match, how="inner", nulls_equal=True)
        .with_columns((pl.col("total_ns") / pl.col("baseline_total_ns")).alias("ratio"))
    )
    agg = pairs.group_by(group).agg(
        pl.len().cast(pl.Int64).alias("pairs"),
        pl.col("ratio").median().alias("median_ratio"),
        pl.col("ratio").min().alias("min_ratio"),
        pl.col("ratio").max().alias("max_ratio"),
        (pl.col("total_ns").sum() / pl.col("baseline_total_ns").sum()).alias("total_ratio"),
    )
    return sort_groups(agg, group).collect()


# --------------------------------------------------------------------------- errors, heatmap


ERROR_COLUMNS: tuple[str, ...] = (
    "cell_id",
    "paging_levels",
    "page_size",
    "strategy",
    "guest_memory",
    "error",
)


def error_rows(source: Source, limit: int | None = None) -> pl.DataFrame:
    """The cells that failed (status != "ok"), with their error messages."""
    lf = scan(source)
    names = lf.collect_schema().names()
    cols = [c for c in ERROR_COLUMNS if c in names]
    order = [c for c in (*VERDICT_KEYS, "guest_memory", "cell_id") if c in cols]
    out = sort_groups(lf.filter(~OK).select(cols), order)
    if limit is not None:
        out = out.head(limit)
    return out.collect()


def error_count(source: Source) -> int:
    return int(scan(source).select((~OK).sum()).collect().item())


# The panels of the RCU-hold heatmap: one per paging depth, kernel, trigger and
# flush_on_yield (those of them the dataset has), a row of panels per strategy
# or kernel (plots.heatmap_layout).
HEATMAP_PANEL_KEYS: tuple[str, ...] = ("paging_levels", "kernel", "trigger", "flush_on_yield")


def rcu_hold_grid(source: Source) -> pl.DataFrame:
    """Worst ``max_rcu_hold_ns`` per strategy, paging depth, kernel, trigger
    (those two if the dataset has them), flush_on_yield, vCPUs and dirty
    ratio: the worst over every other field (guest memory, page size, ...)."""
    lf = scan(source)
    names = lf.collect_schema().names()
    panels = [k for k in HEATMAP_PANEL_KEYS if k in names]
    keys = ["strategy", *panels, "vcpus", "dirty_ratio"]
    agg = (
        lf.filter(OK)
        .group_by(keys)
        .agg(pl.col("max_rcu_hold_ns").max().alias("worst_max_rcu_hold_ns"))
    )
    return sort_groups(agg, keys).collect()


def distinct_values(source: Source, columns: Sequence[str]) -> dict[str, list]:
    """Distinct values of a few provenance columns (engine, cost model...)."""
    lf = scan(source)
    names = lf.collect_schema().names()
    out: dict[str, list] = {}
    for c in columns:
        if c in names:
            out[c] = sorted(
                lf.select(pl.col(c).drop_nulls().unique()).collect().to_series().to_list()
            )
    return out


def row_count(source: Source) -> int:
    return int(scan(source).select(pl.len()).collect().item())
