"""The worst-case latency report of a sweep: summary.parquet, report.md,
a self-contained report.html and plots/*.png, plus the terminal headline.

``write_report(run_dir)`` is called at the end of every sweep;
``zapsweep-report`` (``sweep.report_cli``) runs it on any run directory.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from engine import format_memory

from . import plots, summary
from .plots import fmt_seconds
from .summary import DEFAULT_GROUP_KEYS, VERDICT_COLUMNS, VERDICT_KEYS, Source

DEFAULT_BUDGET_MS = 100.0
DEFAULT_STALL_TIMEOUT_S = 21.0
MAX_ERRORS_LISTED = 100
MAX_SUMMARY_ROWS_MD = 200
PROVENANCE_COLUMNS = ("engine", "cost_model", "engine_version")


# --------------------------------------------------------------------------- formatting


def fmt_ns(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return fmt_seconds(v / 1e9)


def fmt_mem(v: Any) -> str:
    return "—" if v is None else format_memory(int(v))


def fmt_ratio(v: Any) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.2f}×"


def fmt_plain(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v.is_integer():
            return str(int(v))
        return f"{v:.1f}" if abs(v) >= 1000 else f"{v:g}"
    return str(v)


def _formatter(column: str) -> Callable[[Any], str]:
    column = column.removesuffix("_a").removesuffix("_b")  # compare's two runs
    if column.endswith("_ns"):
        return fmt_ns
    if column.endswith("_ratio") and column not in ("dirty_ratio", "accessed_ratio"):
        return fmt_ratio
    if column in ("guest_memory", "largest_memory") or column.endswith(("_up_to", "_from")):
        return fmt_mem
    return fmt_plain


def display(df: pl.DataFrame, headers: dict[str, str] | None = None) -> pl.DataFrame:
    """All-string copy of ``df`` with human units (times, memory sizes, ratios)."""
    headers = headers or {}
    return pl.DataFrame(
        {headers.get(c, c): [_formatter(c)(v) for v in df[c].to_list()] for c in df.columns},
        schema={headers.get(c, c): pl.String for c in df.columns},
    )


def split_constant(df: pl.DataFrame, keys: Sequence[str]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Drop the key columns that hold one value in every row; return them apart."""
    fixed = {k: df[k][0] for k in keys if k in df.columns and df.height and df[k].n_unique() == 1}
    return df.drop(list(fixed)), fixed


def markdown_table(df: pl.DataFrame) -> str:
    if not df.width:
        return ""
    esc = [c.replace("|", "\\|") for c in df.columns]
    lines = ["| " + " | ".join(esc) + " |", "|" + "---|" * df.width]
    for r in df.rows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |")
    return "\n".join(lines)


def html_table(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in df.rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def terminal_table(df: pl.DataFrame) -> str:
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=400,
        fmt_str_lengths=200,
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_cell_alignment="RIGHT",
    ):
        return str(df)


# --------------------------------------------------------------------------- content


HEADLINE_HEADERS = {
    "paging_levels": "paging",
    "page_size": "page",
    "strategy": "strategy",
    "cells": "cells",
    "errors": "errors",
    "largest_memory": "largest guest",
    "worst_max_op_ns": "worst op",
    "worst_max_rcu_hold_ns": "worst RCU hold",
    "stalls": "stalls",
    "under_budget_up_to": "under budget up to",
    "stall_free_up_to": "no stall up to",
    "median_ratio": "total vs root",
}


def headline(verdicts: pl.DataFrame, price: pl.DataFrame) -> pl.DataFrame:
    """Per paging depth, page size and strategy: the numbers a reviewer reads first."""
    keys = list(VERDICT_KEYS)
    ratio = price.select(*keys, "median_ratio")
    out = verdicts.join(ratio, on=keys, how="left", maintain_order="left")
    out = out.with_columns(
        pl.when(pl.col("strategy") == summary.BASELINE_STRATEGY)
        .then(pl.lit(1.0))
        .otherwise(pl.col("median_ratio"))
        .alias("median_ratio")
    )
    return out.select(list(HEADLINE_HEADERS))


def verdict_lines(verdicts: pl.DataFrame, budget_ms: float) -> list[str]:
    """One sentence per paging depth and page size, judged at its largest guest."""
    budget_ns = budget_ms * 1e6
    budget = fmt_seconds(budget_ms / 1e3)
    lines = []
    for (depth, page), grp in verdicts.filter(pl.col("cells") > 0).group_by(
        ["paging_levels", "page_size"], maintain_order=True
    ):
        largest = grp["largest_memory"].max()
        at = grp.filter(pl.col("largest_memory") == largest)
        under = at.filter(pl.col("worst_op_at_largest_ns") < budget_ns)
        over = at.filter(pl.col("worst_op_at_largest_ns") >= budget_ns)
        stall = at.filter(pl.col("stall_at_largest"))
        untested = grp.filter(pl.col("largest_memory") != largest)["strategy"].to_list()

        def names(df: pl.DataFrame) -> str:
            return ", ".join(
                f"{s} ({fmt_ns(v)})"
                for s, v in df.select("strategy", "worst_op_at_largest_ns").rows()
            )

        text = (
            f"**{depth}-level paging, {page} pages, {fmt_mem(largest)} guest:** worst operation "
            f"under {budget} with {names(under) if under.height else 'no strategy'}"
        )
        text += f"; over {budget} with {names(over)}. " if over.height else ". "
        stalled = ", ".join(stall["strategy"].to_list())
        text += f"RCU stall with {stalled}." if stall.height else "No RCU stall."
        if untested:
            text += f" Not tested at {fmt_mem(largest)}: {', '.join(untested)}."
        lines.append(text)
    return lines


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows, aggregated from one dataset."""

    source: str
    budget_ms: float
    stall_timeout_s: float
    group_keys: tuple[str, ...]
    rows: int
    summary: pl.DataFrame
    verdicts: pl.DataFrame
    price: pl.DataFrame
    headline: pl.DataFrame
    curve: pl.DataFrame
    rcu_grid: pl.DataFrame
    plot_summary: pl.DataFrame
    error_count: int
    errors: pl.DataFrame
    provenance: dict[str, list]
    manifest: dict | None


def load_manifest(path: str | Path) -> dict | None:
    """``manifest.json`` of the run, if there is one and it parses."""
    p = Path(path)
    candidates = [p / "manifest.json", summary.output_dir(p) / "manifest.json"]
    for c in candidates:
        if c.is_file():
            try:
                return json.loads(c.read_text())
            except (OSError, json.JSONDecodeError) as e:
                return {"unreadable manifest.json": str(e)}
    return None


def collect(
    path: str | Path,
    budget_ms: float = DEFAULT_BUDGET_MS,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    group_keys: Sequence[str] | None = None,
) -> ReportData:
    keys = tuple(group_keys or DEFAULT_GROUP_KEYS)
    lf = summary.scan_results(path)
    verdicts = summary.verdicts(lf, budget_ms)
    price = summary.price_of_safety(lf)
    summ = summary.summarize(lf, keys)
    plot_summary = summ if keys == DEFAULT_GROUP_KEYS else summary.summarize(lf)
    return ReportData(
        source=str(path),
        budget_ms=budget_ms,
        stall_timeout_s=stall_timeout_s,
        group_keys=keys,
        rows=summary.row_count(lf),
        summary=summ,
        verdicts=verdicts,
        price=price,
        headline=headline(verdicts, price),
        curve=summary.memory_curve(lf),
        rcu_grid=summary.rcu_hold_grid(lf),
        plot_summary=plot_summary,
        error_count=summary.error_count(lf),
        errors=summary.error_rows(lf, MAX_ERRORS_LISTED),
        provenance=summary.distinct_values(lf, PROVENANCE_COLUMNS + ("worker",)),
        manifest=load_manifest(path),
    )


def _provenance_rows(data: ReportData) -> list[tuple[str, str]]:
    rows = [("dataset", data.source), ("rows", str(data.rows))]
    for c in PROVENANCE_COLUMNS:
        if c in data.provenance:
            rows.append((c, ", ".join(map(str, data.provenance[c])) or "—"))
    if "worker" in data.provenance:
        rows.append(("workers (Ray nodes)", str(len(data.provenance["worker"]))))
    if data.manifest is None:
        rows.append(("manifest.json", "absent"))
    else:
        for k, v in data.manifest.items():
            text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
            rows.append((f"manifest: {k}", text))
    return rows


def _sections(data: ReportData) -> dict[str, pl.DataFrame]:
    price = data.price.select(
        *VERDICT_KEYS, "pairs", "median_ratio", "min_ratio", "max_ratio", "total_ratio"
    )
    verdict_cols = [*VERDICT_KEYS, *VERDICT_COLUMNS]
    budget = fmt_seconds(data.budget_ms / 1e3)
    return {
        "headline": display(
            data.headline,
            {
                **HEADLINE_HEADERS,
                "under_budget_up_to": f"under {budget} up to",
                "median_ratio": "total vs root (median)",
            },
        ),
        "verdicts": display(data.verdicts.select(verdict_cols)),
        "price": display(price),
        "summary": display(data.summary.head(MAX_SUMMARY_ROWS_MD)),
        "errors": display(data.errors),
    }


TITLE = "zapsweep: worst-case latency of TDP MMU root zaps"


def render_markdown(data: ReportData, plot_paths: dict[str, Path], out_dir: Path) -> str:
    t = _sections(data)
    budget = fmt_seconds(data.budget_ms / 1e3)
    md = [f"# {TITLE}", ""]
    md += [
        f"Dataset `{data.source}`: {data.rows} cells "
        f"({data.rows - data.error_count} results, {data.error_count} errors). "
        f"Latency budget {budget}, RCU stall timeout {fmt_seconds(data.stall_timeout_s)}. "
        f"Generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}.",
        "",
        "## Verdicts",
        "",
    ]
    md += [f"- {line}" for line in verdict_lines(data.verdicts, data.budget_ms)] or ["- no results"]
    md += [
        "",
        "## Headline",
        "",
        "Per paging depth, page size and strategy, worst over every other field. "
        f"*under {budget} up to*: the largest guest memory such that it and every smaller one "
        "tested keep the worst single operation strictly under the budget; *no stall up to*: "
        "the same for RCU stalls; *total vs root*: median of total_ns / total_ns of `root` on "
        "the same cells.",
        "",
        markdown_table(t["headline"]),
        "",
        "### Verdict details",
        "",
        markdown_table(t["verdicts"]),
        "",
        "## Price of safety",
        "",
        "total_ns of each strategy relative to `root` on the same cells (matched on every "
        "scenario field except zap_levels, and on engine and cost model).",
        "",
        markdown_table(t["price"]) if data.price.height else "No cells pair with `root`.",
        "",
        "## Plots",
        "",
    ]
    for name, p in plot_paths.items():
        md += [f"![{name}]({p.relative_to(out_dir).as_posix()})", ""]
    md += [
        f"## Summary ({data.summary.height} groups by {', '.join(data.group_keys)})",
        "",
        markdown_table(t["summary"]),
        "",
    ]
    if data.summary.height > MAX_SUMMARY_ROWS_MD:
        md += [f"First {MAX_SUMMARY_ROWS_MD} groups; all are in `summary.parquet`.", ""]
    md += [f"## Errors ({data.error_count})", ""]
    if data.error_count:
        md += [markdown_table(t["errors"]), ""]
        if data.error_count > data.errors.height:
            md += [f"First {data.errors.height} listed.", ""]
    else:
        md += ["No cell failed.", ""]
    md += ["## Provenance", ""]
    md += [
        markdown_table(pl.DataFrame(_provenance_rows(data), schema=["item", "value"], orient="row"))
    ]
    return "\n".join(md) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
code{background:#f4f4f4;padding:0 .2em}
li{margin:.3em 0}
"""


def _md_inline(text: str) -> str:
    """The two inline markups verdict lines use (**bold**, `code`), as HTML."""
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(data: ReportData, plot_paths: dict[str, Path]) -> str:
    t = _sections(data)
    budget = fmt_seconds(data.budget_ms / 1e3)
    h = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(TITLE)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(TITLE)}</h1>",
        f"<p>Dataset <code>{html.escape(data.source)}</code>: {data.rows} cells "
        f"({data.rows - data.error_count} results, {data.error_count} errors). "
        f"Latency budget {budget}, RCU stall timeout {fmt_seconds(data.stall_timeout_s)}.</p>",
        "<h2>Verdicts</h2><ul>",
    ]
    h += [f"<li>{_md_inline(x)}</li>" for x in verdict_lines(data.verdicts, data.budget_ms)]
    h += [
        "</ul><h2>Headline</h2>",
        f"<p><em>under {budget} up to</em>: the largest guest memory such that it and every "
        "smaller one tested keep the worst single operation strictly under the budget; "
        "<em>no stall up to</em>: the same for RCU stalls; <em>total vs root</em>: median of "
        "total_ns / total_ns of <code>root</code> on the same cells.</p>",
        html_table(t["headline"]),
        "<details><summary>Verdict details</summary>",
        html_table(t["verdicts"]),
        "</details><h2>Price of safety</h2>",
        "<p>total_ns of each strategy relative to <code>root</code> on the same cells.</p>",
        html_table(t["price"]) if data.price.height else "<p>No cells pair with root.</p>",
        "<h2>Plots</h2>",
    ]
    for name, p in plot_paths.items():
        b64 = base64.b64encode(p.read_bytes()).decode("ascii")
        h.append(f"<p><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'></p>")
    h += [
        f"<h2>Summary</h2><details><summary>{data.summary.height} groups by "
        f"{html.escape(', '.join(data.group_keys))}</summary>",
        html_table(t["summary"]),
        "</details>",
        f"<h2>Errors ({data.error_count})</h2>",
        html_table(t["errors"]) if data.error_count else "<p>No cell failed.</p>",
        "<h2>Provenance</h2>",
        html_table(pl.DataFrame(_provenance_rows(data), schema=["item", "value"], orient="row")),
        "</body></html>",
    ]
    return "\n".join(h) + "\n"


# --------------------------------------------------------------------------- entry points


def write_plots(data: ReportData, plots_dir: Path) -> dict[str, Path]:
    plots_dir.mkdir(parents=True, exist_ok=True)
    f = plots.PLOT_FILES
    return {
        "latency_vs_memory": plots.plot_latency_vs_memory(
            data.curve, plots_dir / f["latency_vs_memory"], data.budget_ms, data.stall_timeout_s
        ),
        "rcu_hold_heatmap": plots.plot_rcu_hold_heatmap(
            data.rcu_grid, plots_dir / f["rcu_hold_heatmap"], data.stall_timeout_s
        ),
        "cost_vs_latency": plots.plot_cost_vs_latency(
            data.plot_summary, plots_dir / f["cost_vs_latency"], data.budget_ms
        ),
    }


def write_report(
    path: str | Path,
    budget_ms: float = DEFAULT_BUDGET_MS,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    group_keys: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write summary.parquet, report.md, report.html and plots/*.png for ``path``.

    ``path`` is a run directory (holding ``results/``) or a results dataset;
    the files go into the run directory, or next to the dataset.
    """
    data = collect(path, budget_ms, stall_timeout_s, group_keys)
    out = summary.output_dir(path)
    written: dict[str, Path] = {}
    written["summary"] = out / "summary.parquet"
    data.summary.write_parquet(written["summary"])
    written.update(write_plots(data, out / "plots"))
    plot_paths = {k: v for k, v in written.items() if k in plots.PLOT_FILES}
    written["report_md"] = out / "report.md"
    written["report_md"].write_text(render_markdown(data, plot_paths, out), encoding="utf-8")
    written["report_html"] = out / "report.html"
    written["report_html"].write_text(render_html(data, plot_paths), encoding="utf-8")
    return written


def headline_table(path: Source, budget_ms: float = DEFAULT_BUDGET_MS) -> str:
    """The headline table and verdict lines, for the terminal."""
    lf = summary.scan_results(path)
    v = summary.verdicts(lf, budget_ms)
    table = headline(v, summary.price_of_safety(lf))
    budget = fmt_seconds(budget_ms / 1e3)
    headers = {**HEADLINE_HEADERS, "under_budget_up_to": f"under {budget} up to"}
    lines = [terminal_table(display(table, headers))]
    lines += [line.replace("**", "") for line in verdict_lines(v, budget_ms)]
    n_err = summary.error_count(lf)
    if n_err:
        lines.append(f"{n_err} cell(s) failed; see the report's error list.")
    return "\n".join(lines)


COMPARE_COLUMNS = ("cells", "errors", "worst_max_op_ns", "worst_max_rcu_hold_ns", "stalls")


def compare(a: Source, b: Source, group_keys: Sequence[str] = DEFAULT_GROUP_KEYS) -> pl.DataFrame:
    """Two runs side by side per group: columns ``<name>_a``, ``<name>_b`` and the
    change in worst latency, ``worst_max_op_change_ns`` (b - a) and
    ``worst_max_op_ratio`` (b / a). Groups present in only one run keep nulls."""
    keys = list(group_keys)
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
