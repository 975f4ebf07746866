"""Two runs side by side: which verdicts changed, then the worst cases per group.

``compare(a, b)`` is the full table (one row per summary group, each measure
of A and B and the change); ``verdict_changes`` says, in words, where the
largest guest under the budget or without an RCU stall moved
("largest stall-free guest, 5-level 4K root: 1TiB -> 16TiB");
``side`` names what made each run (its directory, cost model, engine
version, kernel presets); ``headline_compare`` is the short table for a
terminal (per paging depth, page size and strategy, within
``TERMINAL_COLUMNS``).  With kernel presets the groups are also per kernel
and trigger, where both runs vary them; two runs whose kernels zap with
strategies the other never used (a 6.6 run against a 6.13 one) are compared
per paging depth and page size, each side's strategy named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine import format_memory

from . import summary
from .plots import TRIGGER_TITLES, fmt_seconds
from .summary import DEFAULT_GROUP_KEYS, KERNEL_KEYS, OK, VERDICT_KEYS, Source

TERMINAL_COLUMNS = 100
COMPARE_COLUMNS = ("cells", "errors", "worst_max_op_ns", "worst_max_rcu_hold_ns", "stalls")


def compare(a: Source, b: Source, group_keys: Sequence[str] = DEFAULT_GROUP_KEYS) -> pl.DataFrame:
    """Two runs side by side per group: columns ``<name>_a``, ``<name>_b`` and the
    change in worst latency, ``worst_max_op_change_ns`` (b - a) and
    ``worst_max_op_ratio`` (b / a). Groups present in only one run keep nulls.
    The default groups are per kernel and trigger too when either run has
    kernel presets."""
    keys = list(group_keys)
    if tuple(keys) == DEFAULT_GROUP_KEYS and (summary.has_kernels(a) or summary.has_kernels(b)):
        keys = [*KERNEL_KEYS, *keys]
    sa = summary.summarize(a, keys).select(*keys, *COMPARE_COLUMNS)
    sb = summary.summarize(b, keys).select(*keys, *COMPARE_COLUMNS)
    joined = sa.join(
        sb,
        on=keys,
        how="full",
        suffix="_b",
        nulls_equal=True,
        coalesce=True,
        maintain_order="left_right",
    ).rename({c: f"{c}_a" for c in COMPARE_COLUMNS})
    wa, wb = pl.col("worst_max_op_ns_a"), pl.col("worst_max_op_ns_b")
    out = joined.with_columns(
        (wb - wa).alias("worst_max_op_change_ns"),
        (wb / wa).alias("worst_max_op_ratio"),
    )
    order = [*keys]
    for c in COMPARE_COLUMNS:
        order += [f"{c}_a", f"{c}_b"]
    out = out.select(*order, "worst_max_op_change_ns", "worst_max_op_ratio")
    return summary.sort_groups(out.lazy(), keys).collect()


# --------------------------------------------------------------------------- the two sides


@dataclass(frozen=True)
class Side:
    """What made one run's rows."""

    path: str
    cost_models: tuple[str, ...]
    engines: tuple[str, ...]
    engine_versions: tuple[str, ...]
    rows: int
    kernels: tuple[str, ...] = ()  # the kernel presets of its cells

    def describe(self) -> str:
        def one(values: tuple[str, ...]) -> str:
            return ", ".join(values) or "—"

        kernels = {0: "no kernel preset", 1: "kernel "}.get(len(self.kernels), "kernels ")
        return (
            f"{self.path} (cost model {one(self.cost_models)}; engine {one(self.engines)}, "
            f"engine version {one(self.engine_versions)}; {kernels}{', '.join(self.kernels)}; "
            f"{self.rows:,} cells)"
        )


def side(path: Path, name: str) -> Side:
    """The run at ``path``: its cost model (with its version, from the manifest)."""
    from sweep.dataset import RunDir, read_manifest

    values = summary.distinct_values(path, ("cost_model", "engine", "engine_version", "kernel"))
    models = tuple(map(str, values.get("cost_model", [])))
    recorded = (read_manifest(RunDir.find(path)) or {}).get("cost_model") or {}
    if models == (recorded.get("name"),) and recorded.get("version") is not None:
        models = (f"{models[0]} v{recorded['version']}",)
    return Side(
        name,
        models,
        tuple(map(str, values.get("engine", []))),
        tuple(map(str, values.get("engine_version", []))),
        summary.row_count(path),
        tuple(k for k in summary.DISPLAY_ORDER["kernel"] if k in values.get("kernel", []))
        + tuple(sorted(set(values.get("kernel", [])) - set(summary.DISPLAY_ORDER["kernel"]))),
    )


# --------------------------------------------------------------------------- verdicts


def _memory(v) -> str:
    return "none" if v is None else format_memory(int(v))


def _strategies(source: Source) -> set[str]:
    return set(summary.distinct_values(source, ("strategy",)).get("strategy", []))


def _shared_keys(a: Source, b: Source) -> list[str]:
    """The verdict groups of a comparison: paging depth, page size, strategy,
    and the kernel, trigger and layout fields that vary in both runs
    (summary.verdict_keys); not the strategy if the runs share none."""
    ka, kb = summary.verdict_keys(a), summary.verdict_keys(b)
    keys = [k for k in ka if k in kb]
    if not _strategies(a) & _strategies(b):  # each kernel its own: compare per shape
        keys.remove("strategy")
    return keys


def _strategy_of(source: Source, keys: list[str]) -> dict[tuple, str]:
    """Per group of ``keys`` (without the strategy): the strategies its cells used."""
    df = (
        summary.scan(source)
        .filter(OK)
        .group_by(keys)
        .agg(pl.col("strategy").unique().sort())
        .collect()
    )
    return {tuple(r[k] for k in keys): ",".join(r["strategy"]) for r in df.to_dicts()}


def _group(keys: list[str], values: tuple, strategies: str | None = None) -> str:
    """A verdict group in words: "5-level 4K root", "5-level q35 split 0.2 4K root",
    "kernel 6.6, VM destruction: 5-level 4K two_pass", "5-level 4K two_pass -> upstream"."""
    named = dict(zip(keys, values, strict=True))
    where = []
    if "kernel" in named:
        where.append("no kernel preset" if named["kernel"] is None else f"kernel {named['kernel']}")
    if "trigger" in named:
        where.append(TRIGGER_TITLES.get(named["trigger"], str(named["trigger"])))
    parts = [f"{named['paging_levels']}-level"]
    if "layout" in named:
        parts.append(str(named["layout"]))
    if "split_ratio" in named:
        parts.append(f"split {named['split_ratio']:g}")
    parts.append(str(named["page_size"]))
    parts.append(str(named["strategy"]) if "strategy" in named else strategies or "—")
    return (", ".join(where) + ": " if where else "") + " ".join(parts)


def verdict_changes(a: Source, b: Source, budget_ms: float) -> list[str]:
    """Each verdict (per paging depth, page size, strategy) that differs between
    the runs, as ``what, group: A -> B``; then the groups only one run has."""
    keys = _shared_keys(a, b)
    cols = ["under_budget_up_to", "stall_free_up_to"]
    va = summary.verdicts(a, budget_ms, keys).select(*keys, *cols, "largest_memory")
    vb = summary.verdicts(b, budget_ms, keys).select(*keys, *cols, "largest_memory")
    both = va.join(vb, on=keys, how="full", suffix="_b", coalesce=True, nulls_equal=True)
    both = summary.sort_groups(both.lazy(), keys).collect()
    budget = fmt_seconds(budget_ms / 1e3)
    what = {
        "under_budget_up_to": f"largest guest under {budget}",
        "stall_free_up_to": "largest stall-free guest",
    }
    in_a = set(va.select(keys).rows())
    in_b = set(vb.select(keys).rows())
    named = _strategy_names(a, b, keys)
    lines, only = [], []
    for row in both.to_dicts():
        group = tuple(row[k] for k in keys)
        label = _group(keys, group, named.get(group))
        if group not in in_a or group not in in_b:
            only.append(f"only in {'B' if group in in_b else 'A'}: {label}")
            continue
        tested = row["largest_memory"], row["largest_memory_b"]
        for c in cols:
            if row[c] != row[f"{c}_b"]:
                was = _bound(row[c], tested[0], tested[1])
                now = _bound(row[c + "_b"], tested[1], tested[0])
                lines.append(f"{what[c]}, {label}: {was} -> {now}")
    return lines + only


def _strategy_names(a: Source, b: Source, keys: list[str]) -> dict[tuple, str]:
    """Without the strategy among the keys: per group, A's strategy -> B's."""
    if "strategy" in keys:
        return {}
    sa, sb = _strategy_of(a, keys), _strategy_of(b, keys)
    return {g: f"{sa.get(g, '—')} -> {sb.get(g, '—')}" for g in sa.keys() | sb.keys()}


def _bound(value, largest, other_largest) -> str:
    """A verdict as text; one that is the largest guest its run tested, where the
    other run tested larger ones, is only a lower bound, and says so."""
    text = _memory(value)
    if value is not None and value == largest and (other_largest or 0) > largest:
        text += " (largest tested)"
    return text


# --------------------------------------------------------------------------- the short table


def headline_compare(a: Source, b: Source) -> pl.DataFrame:
    """Per paging depth, page size and strategy (and the layout fields that vary
    in both runs): worst operation, worst RCU hold and stalls in A and B (all
    strings, for the terminal)."""
    keys = _shared_keys(a, b)
    layout = [k for k in keys if k not in (*VERDICT_KEYS, *KERNEL_KEYS)]
    kernel = [k for k in keys if k in KERNEL_KEYS]
    named = _strategy_names(a, b, keys)
    cols = ["worst_max_op_ns", "worst_max_rcu_hold_ns", "stalls"]
    va = summary.verdicts(a, keys=keys).select(*keys, *cols)
    vb = summary.verdicts(b, keys=keys).select(*keys, *cols)
    both = va.join(vb, on=keys, how="full", suffix="_b", coalesce=True, nulls_equal=True)
    both = summary.sort_groups(both.lazy(), keys).collect()

    def ns(v) -> str:
        return "—" if v is None else fmt_seconds(v / 1e9)

    def ratio(x, y) -> str:
        return "—" if x is None or y is None or x == 0 else f"{y / x:.2f}×"

    def count(v) -> str:
        return "—" if v is None else str(v)

    rows = []
    for r in both.to_dicts():
        strategy = (
            r["strategy"]
            if "strategy" in keys
            else named[tuple(r[k] for k in keys)].replace(" -> ", "→")
        )
        strategy = strategy if len(strategy) <= 18 else strategy[:17] + "…"
        shape = " ".join(f"split {r[k]:g}" if k == "split_ratio" else str(r[k]) for k in layout)
        rows.append(
            {
                **{k: "—" if r[k] is None else str(r[k]) for k in kernel},
                "paging": str(r["paging_levels"]),
                **({"layout": shape} if layout else {}),
                "page": r["page_size"],
                "strategy": strategy,
                "worst op A": ns(r["worst_max_op_ns"]),
                "worst op B": ns(r["worst_max_op_ns_b"]),
                "B/A": ratio(r["worst_max_op_ns"], r["worst_max_op_ns_b"]),
                "RCU hold A": ns(r["worst_max_rcu_hold_ns"]),
                "RCU hold B": ns(r["worst_max_rcu_hold_ns_b"]),
                "stalls A→B": f"{count(r['stalls'])}→{count(r['stalls_b'])}",
            }
        )
    columns = [c for c in HEADLINE_COMPARE_COLUMNS if c != "layout" or layout]
    columns = [c for c in columns if c not in KERNEL_KEYS or c in kernel]
    return pl.DataFrame(rows, schema={c: pl.String for c in columns})


HEADLINE_COMPARE_COLUMNS = (
    "kernel",  # when kernels vary in both runs
    "trigger",
    "paging",
    "layout",  # when a layout field varies in both runs
    "page",
    "strategy",
    "worst op A",
    "worst op B",
    "B/A",
    "RCU hold A",
    "RCU hold B",
    "stalls A→B",
)


def plain_table(df: pl.DataFrame) -> str:
    """Columns padded to their widest cell, two spaces apart; text left, figures right."""
    if not df.width:
        return ""
    cells = [list(df.columns)] + [[str(v) for v in r] for r in df.rows()]
    widths = [max(len(row[i]) for row in cells) for i in range(df.width)]
    left = {"kernel", "trigger", "layout", "page", "strategy"}

    def line(row: list[str]) -> str:
        parts = [
            v.ljust(w) if c in left else v.rjust(w)
            for v, w, c in zip(row, widths, df.columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join(line(r) for r in cells)


def terminal_compare(a: Source, b: Source, width: int = TERMINAL_COLUMNS) -> str:
    """The short table, within ``width`` columns (the RCU holds go first if it is not)."""
    df = headline_compare(a, b)
    for drop in ([], ["RCU hold A", "RCU hold B"], ["RCU hold A", "RCU hold B", "B/A"]):
        text = plain_table(df.drop(drop))
        if max((len(x) for x in text.splitlines()), default=0) <= width:
            return text
    return text


def default_output(b: Path) -> Path:
    """Where the full table goes unless ``--output`` says: B's report directory."""
    from sweep.dataset import RunDir

    return RunDir.find(b).compare_md
