"""The worst-case latency report of a sweep: summary.parquet, report.md,
a self-contained report.html and plots/*.png, plus the terminal headline.

``write_report(run_dir)`` is called at the end of every sweep;
``zapsweep-report`` (``sweep.report.cli``) runs it on any run directory.
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

from engine import Scenario, ScenarioError, format_memory, strategy_name
from sweep.dataset import BadFile, read_manifest

from . import fleet, plots, summary
from .plots import TRIGGER_TITLES, fmt_seconds
from .summary import (
    DEFAULT_GROUP_KEYS,
    VERDICT_COLUMNS,
    Results,
    Source,
    open_results,
)

DEFAULT_BUDGET_MS = 100.0
DEFAULT_STALL_TIMEOUT_S = 21.0
MAX_ERRORS_LISTED = 100
MAX_SUMMARY_ROWS_MD = 200
MAX_VM_SECTIONS = 100  # a section each for the VMs with the longest worst operation
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


# Scenario fields named *_ratio are fractions, shown as given (not as "1.23x").
SCENARIO_RATIOS = ("populated_ratio", "accessed_ratio", "dirty_ratio", "split_ratio")


def _formatter(column: str) -> Callable[[Any], str]:
    column = column.removesuffix("_a").removesuffix("_b")  # compare's two runs
    if column.endswith("_ns"):
        return fmt_ns
    if column.endswith("_ratio") and column not in SCENARIO_RATIOS:
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
    "kernel": "kernel",
    "trigger": "trigger",
    "paging_levels": "paging",
    "layout": "layout",
    "split_ratio": "split",
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


def verdict_group(verdicts: pl.DataFrame) -> list[str]:
    """The verdict keys of a verdicts table (summary.verdict_keys): the
    paging depth, the layout fields that vary, the page size, the strategy."""
    return [c for c in summary.VERDICT_KEY_ORDER if c in verdicts.columns]


def headline(verdicts: pl.DataFrame, price: pl.DataFrame) -> pl.DataFrame:
    """Per paging depth, page size and strategy (and layout, split ratio when
    they vary): the numbers a reviewer reads first."""
    keys = verdict_group(verdicts)
    ratio = price.select(*keys, "median_ratio")
    out = verdicts.join(ratio, on=keys, how="left", maintain_order="left")
    out = out.with_columns(
        pl.when(pl.col("strategy") == summary.BASELINE_STRATEGY)
        .then(pl.lit(1.0))
        .otherwise(pl.col("median_ratio"))
        .alias("median_ratio")
    )
    return out.select(c for c in HEADLINE_HEADERS if c in out.columns)


def _group_name(key: str, value: Any) -> str:
    if key == "kernel":
        return "no kernel preset" if value is None else f"kernel {value}"
    if key == "trigger":
        return TRIGGER_TITLES.get(value, str(value))
    if key == "paging_levels":
        return f"{value}-level paging"
    if key == "page_size":
        return f"{value} pages"
    if key == "split_ratio":
        return f"split ratio {fmt_plain(value)}"
    return f"{value} layout"


def verdict_lines(verdicts: pl.DataFrame, budget_ms: float) -> list[str]:
    """One sentence per paging depth and page size (and layout, split ratio
    when they vary), judged at its largest guest."""
    budget_ns = budget_ms * 1e6
    budget = fmt_seconds(budget_ms / 1e3)
    lines = []
    by = [k for k in verdict_group(verdicts) if k != "strategy"]
    for values, grp in verdicts.filter(pl.col("cells") > 0).group_by(by, maintain_order=True):
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

        group = ", ".join(_group_name(k, v) for k, v in zip(by, values, strict=True))
        text = (
            f"**{group}, {fmt_mem(largest)} guest:** worst operation "
            f"under {budget} with {names(under) if under.height else 'no strategy'}"
        )
        text += f"; over {budget} with {names(over)}. " if over.height else ". "
        stalled = ", ".join(stall["strategy"].to_list())
        text += f"RCU stall with {stalled}." if stall.height else "No RCU stall."
        if untested:
            text += f" Not tested at {fmt_mem(largest)}: {', '.join(untested)}."
        lines.append(text)
    return lines


def incomplete_note(manifest: dict | None, rows: int) -> str | None:
    """For the top of a report on a run that did not complete: its status, its
    counts and the command that resumes it; None for a complete run."""
    status = (manifest or {}).get("status")
    if status in (None, "complete"):
        return None
    counts = manifest.get("counts") or {}
    text = f"**Incomplete run** (status `{status}`"
    if manifest.get("stopped_by"):
        text += f", stopped by {manifest['stopped_by']}"
    if manifest.get("error"):
        text += f": {manifest['error']}"
    if manifest.get("stopped_because"):
        text += f": {manifest['stopped_because']}"
    text += f"): {rows:,} cells in the dataset"
    total, covered = manifest.get("grid_combinations"), counts.get("combinations")
    if total and covered is not None:
        text += f", {covered:,} of the grid's {total:,} combinations covered"
    text += "."
    if status == "running":
        text += " The sweep is still running, or its driver was killed."
    if manifest.get("command"):
        text += f" Resume with `{manifest['command']}`."
    return text + " Every figure below is of these cells only."


def kernel_lines(kernels: pl.DataFrame, budget_ms: float) -> list[str]:
    """One sentence per kernel and trigger: its worst operation and RCU
    hold, and the largest guest without an RCU stall."""
    budget = fmt_seconds(budget_ms / 1e3)
    lines = []
    for row in kernels.filter(pl.col("cells") > 0).iter_rows(named=True):
        who = f"**On {row['kernel']}, {TRIGGER_TITLES.get(row['trigger'], row['trigger'])}:**"
        op = f"worst operation {fmt_ns(row['worst_max_op_ns'])}"
        under, over = row["under_budget_up_to"], row["over_budget_from"]
        if over is None:
            op += f" (under {budget} at every size tested)"
        elif under is None:
            op += f" (over {budget} from the smallest guest tested, {fmt_mem(over)})"
        else:
            op += f" (under {budget} up to {fmt_mem(under)}, over from {fmt_mem(over)})"
        free, stalls = row["stall_free_up_to"], row["stalls_from"]
        if stalls is None:
            stall = f"no RCU stall up to {fmt_mem(row['largest_memory'])}, the largest tested"
        elif free is None:
            stall = f"RCU stalls from {fmt_mem(stalls)}, the smallest guest tested"
        else:
            stall = f"RCU stalls from {fmt_mem(stalls)}: no stall up to {fmt_mem(free)}"
        hold = fmt_ns(row["worst_max_rcu_hold_ns"])
        lines.append(f"{who} {op}, worst RCU hold {hold}; {stall}.")
    return lines


KERNEL_COLUMNS = (
    "kernel",
    "trigger",
    "cells",
    "errors",
    "largest_memory",
    "worst_max_op_ns",
    "worst_max_rcu_hold_ns",
    "worst_wall_ns",
    "stalls",
    "under_budget_up_to",
    "over_budget_from",
    "stall_free_up_to",
    "stalls_from",
)
KERNEL_HEADERS = {
    "largest_memory": "largest guest",
    "worst_max_op_ns": "worst op",
    "worst_max_rcu_hold_ns": "worst RCU hold",
    "worst_wall_ns": "longest zap (wall)",
    "stall_free_up_to": "no stall up to",
    "stalls_from": "stalls from",
}


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
    skipped: tuple[BadFile, ...] = ()  # files the integrity check refused, not read
    vms: pl.DataFrame | None = None  # per VM of a fleet inventory (fleet.vm_verdicts)
    vm_shapes: pl.DataFrame | None = None
    kernels: pl.DataFrame | None = None  # summary.kernel_verdicts, when kernels ran
    kernel_curve: pl.DataFrame | None = None  # worst cases per kernel, trigger, memory


def collect(
    results: Results,
    budget_ms: float = DEFAULT_BUDGET_MS,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    group_keys: Sequence[str] | None = None,
    source: str | None = None,
) -> ReportData:
    keys = tuple(group_keys or DEFAULT_GROUP_KEYS)
    lf = results.scan()
    verdict_keys = summary.verdict_keys(lf)
    verdicts = summary.verdicts(lf, budget_ms, verdict_keys)
    price = summary.price_of_safety(lf, keys=verdict_keys)
    summ = summary.summarize(lf, keys)
    plot_summary = summ if keys == DEFAULT_GROUP_KEYS else summary.summarize(lf)
    manifest = read_manifest(results.run)
    vms = fleet.vm_verdicts(lf) if fleet.has_vms(lf) else None
    columns = ((manifest or {}).get("inventory") or {}).get("columns")
    # The latency plot is worst over kernels and triggers; they have their own.
    plot_keys = [k for k in verdict_keys if k not in summary.KERNEL_KEYS]
    kernels = kernel_curve = None
    if summary.has_kernels(lf):
        kernels = summary.kernel_verdicts(lf, budget_ms)
        with_kernel = lf.filter(pl.col("kernel").is_not_null())
        kernel_curve = summary.memory_curve(with_kernel, summary.KERNEL_KEYS)
    return ReportData(
        source=source or str(results.run.results),
        budget_ms=budget_ms,
        stall_timeout_s=stall_timeout_s,
        group_keys=keys,
        rows=summary.row_count(lf),
        summary=summ,
        verdicts=verdicts,
        price=price,
        headline=headline(verdicts, price),
        curve=summary.memory_curve(lf, plot_keys),
        rcu_grid=summary.rcu_hold_grid(lf),
        plot_summary=plot_summary,
        error_count=summary.error_count(lf),
        errors=summary.error_rows(lf, MAX_ERRORS_LISTED),
        provenance=summary.distinct_values(lf, PROVENANCE_COLUMNS + ("worker",)),
        manifest=manifest,
        skipped=results.skipped,
        vms=vms,
        vm_shapes=fleet.vm_shapes(lf, columns) if vms is not None else None,
        kernels=kernels,
        kernel_curve=kernel_curve,
    )


def _provenance_rows(data: ReportData) -> list[tuple[str, str]]:
    rows = [("dataset", data.source), ("rows", str(data.rows))]
    if data.skipped:
        rows.append(("files skipped", str(len(data.skipped))))
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


# --------------------------------------------------------------------------- sections
# The report is one list of sections; render_markdown and render_html each draw
# it.  Prose uses three inline marks: **bold**, *emphasis* and `code`.


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Note:
    """A warning that heads the report (a run that did not complete)."""

    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    df: pl.DataFrame
    folded: str | None = None  # in HTML, folded away under this summary line


@dataclass(frozen=True)
class Plot:
    name: str
    path: Path


Block = Text | Note | Bullets | Table | Plot


@dataclass(frozen=True)
class Section:
    title: str | None  # None: the report's opening paragraph
    blocks: tuple[Block, ...]
    level: int = 2


def sections(data: ReportData, plot_paths: dict[str, Path]) -> list[Section]:
    """The report's content, in order, for both renderers."""
    budget = fmt_seconds(data.budget_ms / 1e3)
    keys = verdict_group(data.verdicts)
    price = data.price.select(
        *keys, "pairs", "median_ratio", "min_ratio", "max_ratio", "total_ratio"
    )
    headline_headers = {
        **HEADLINE_HEADERS,
        "under_budget_up_to": f"under {budget} up to",
        "median_ratio": "total vs root (median)",
    }
    skipped = (
        f" {len(data.skipped)} unreadable result file(s) skipped (listed below)."
        if data.skipped
        else ""
    )
    groups = f"{data.summary.height} groups by {', '.join(data.group_keys)}"
    note = incomplete_note(data.manifest, data.rows)
    out = [
        Section(
            None,
            ((Note(note),) if note else ())
            + (
                Text(
                    f"Dataset `{data.source}`: {data.rows} cells "
                    f"({data.rows - data.error_count} results, {data.error_count} errors). "
                    f"Latency budget {budget}, RCU stall timeout "
                    f"{fmt_seconds(data.stall_timeout_s)}.{skipped} Generated "
                    f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}."
                ),
            ),
        ),
        *_kernel_sections(data),
        Section(
            "Verdicts",
            (Bullets(tuple(verdict_lines(data.verdicts, data.budget_ms)) or ("no results",)),),
        ),
        *vm_sections(data),
        Section(
            "Headline",
            (
                Text(
                    "Per paging depth, page size and strategy (and memory layout and split "
                    "ratio, where the dataset holds more than one), worst over every other "
                    "field. "
                    f"*under {budget} up to*: the largest guest memory such that it and every "
                    "smaller one tested keep the worst single operation strictly under the "
                    "budget; *no stall up to*: the same for RCU stalls; *total vs root*: "
                    "median of total_ns / total_ns of `root` on the same cells."
                ),
                Table(display(data.headline, headline_headers)),
            ),
        ),
        Section(
            "Verdict details",
            (
                Table(
                    display(data.verdicts.select(*keys, *VERDICT_COLUMNS)),
                    folded="Verdict details",
                ),
            ),
            level=3,
        ),
        Section(
            "Price of safety",
            (
                Text(
                    "total_ns of each strategy relative to `root` on the same cells (matched "
                    "on every scenario field except zap_levels, and on engine and cost model)."
                ),
                Table(display(price)) if data.price.height else Text("No cells pair with `root`."),
            ),
        ),
        Section("Plots", tuple(Plot(name, p) for name, p in plot_paths.items())),
        Section(
            f"Summary ({groups})",
            (Table(display(data.summary.head(MAX_SUMMARY_ROWS_MD)), folded=groups),)
            + (
                (Text(f"First {MAX_SUMMARY_ROWS_MD} groups; all are in `summary.parquet`."),)
                if data.summary.height > MAX_SUMMARY_ROWS_MD
                else ()
            ),
        ),
        Section(f"Errors ({data.error_count})", _error_blocks(data)),
    ]
    if data.skipped:
        listed = pl.DataFrame(
            {"file": [str(b.path) for b in data.skipped], "why": [b.reason for b in data.skipped]}
        )
        out.append(
            Section(
                f"Skipped files ({len(data.skipped)})",
                (
                    Text(
                        "These files failed the integrity check and were not read; the report "
                        "left them where they are. The next `zapsweep` into this run directory "
                        "moves them to `quarantine/` and runs their cells again."
                    ),
                    Table(listed),
                ),
            )
        )
    provenance = pl.DataFrame(_provenance_rows(data), schema=["item", "value"], orient="row")
    out.append(Section("Provenance", (Table(provenance),)))
    return out


VM_HEADERS = {
    "worst_max_op_ns": "worst op",
    "worst_max_rcu_hold_ns": "worst RCU hold",
    "stalls": "cells with an RCU stall",
}


def vm_sections(data: ReportData) -> list[Section]:
    """For a fleet inventory: a table of every VM (its worst operation per
    strategy, and whether it stalls), then a section per VM."""
    if data.vms is None or not data.vms.height:
        return []
    vms = data.vms
    keys = [k for k in fleet.PER if k in vms.columns]
    per = " and ".join(keys)
    verdict = vms.with_columns(
        pl.struct("worst_max_op_ns", "stalls")
        .map_elements(
            lambda r: fmt_ns(r["worst_max_op_ns"]) + (", RCU stall" if r["stalls"] else ""),
            return_dtype=pl.String,
        )
        .alias("verdict"),
        pl.concat_str([pl.col(k).cast(pl.String) for k in keys], separator=" / ").alias("per"),
    )
    overview = verdict.pivot(on="per", index="name", values="verdict", aggregate_function="first")
    names = vms["name"].unique(maintain_order=True).to_list()
    shapes = {
        r["name"]: r for r in (data.vm_shapes.to_dicts() if data.vm_shapes is not None else [])
    }
    out = [
        Section(
            f"VMs ({len(names)})",
            (
                Text(
                    f"Per VM of the inventory, per {per}: the worst single operation over the "
                    "VM's cells, and whether any of them holds RCU past the stall timeout. "
                    f"The VM with the longest worst operation first; a section each for the "
                    f"first {MAX_VM_SECTIONS}. All of it is in `vms.parquet`."
                ),
                Table(overview.fill_null("—")),
            ),
        )
    ]
    for name in names[:MAX_VM_SECTIONS]:
        rows = vms.filter(pl.col("name") == name)
        shape = shapes.get(name, {})
        described = ", ".join(
            f"{k}={fmt_mem(v) if k == 'guest_memory' else fmt_plain(v)}"
            for k, v in shape.items()
            if k != "name"
        )
        stalls = rows.filter(pl.col("stalls") > 0)[keys[-1]].to_list()
        line = (f"{described}. " if described else "") + (
            f"RCU stall with {', '.join(map(str, stalls))}." if stalls else "No RCU stall."
        )
        table = rows.select(*keys, "cells", "errors", *VM_HEADERS)
        out.append(Section(f"VM {name}", (Text(line), Table(display(table, VM_HEADERS))), level=3))
    if len(names) > MAX_VM_SECTIONS:
        out.append(Section(None, (Text(f"{len(names) - MAX_VM_SECTIONS} more VMs: see above."),)))
    return out


def _kernel_sections(data: ReportData) -> list[Section]:
    if data.kernels is None:
        return []
    budget = fmt_seconds(data.budget_ms / 1e3)
    table = data.kernels.select(c for c in KERNEL_COLUMNS if c in data.kernels.columns)
    headers = {
        **KERNEL_HEADERS,
        "under_budget_up_to": f"under {budget} up to",
        "over_budget_from": f"over {budget} from",
    }
    return [
        Section(
            "Kernels",
            (
                Text(
                    "Per kernel preset and what triggers the zap, worst over every other field "
                    "(paging depth, page size, roots, ...): the worst single operation, the "
                    "worst RCU hold, and the largest guest without an RCU stall (it and every "
                    "smaller one tested). *longest zap (wall)*: until the last root is done, "
                    "parallel workers counted once."
                ),
                Bullets(tuple(kernel_lines(data.kernels, data.budget_ms)) or ("no results",)),
                Table(display(table, headers)),
            ),
        )
    ]


def _error_blocks(data: ReportData) -> tuple[Block, ...]:
    if not data.error_count:
        return (Text("No cell failed."),)
    blocks: tuple[Block, ...] = (Table(display(data.errors)),)
    if data.error_count > data.errors.height:
        blocks += (Text(f"First {data.errors.height} listed."),)
    return blocks


TITLE = "zapsweep: worst-case latency of TDP MMU root zaps"


def render_markdown(data: ReportData, plot_paths: dict[str, Path], out_dir: Path) -> str:
    md = [f"# {TITLE}", ""]
    for section in sections(data, plot_paths):
        if section.title is not None:
            md += [f"{'#' * section.level} {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                md += [block.text, ""]
            elif isinstance(block, Note):
                md += [f"> {block.text}", ""]
            elif isinstance(block, Bullets):
                md += [f"- {item}" for item in block.items] + [""]
            elif isinstance(block, Table):
                md += [markdown_table(block.df), ""]
            else:
                md += [f"![{block.name}]({block.path.relative_to(out_dir).as_posix()})", ""]
    return "\n".join(md).rstrip("\n") + "\n"


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
.note{background:#fff4e0;border-left:4px solid #e69500;padding:.5em .8em}
"""


def _inline_html(text: str) -> str:
    """The report's inline marks (**bold**, *emphasis*, `code`) as HTML."""
    out = html.escape(text)
    for mark, tag in (("**", "strong"), ("*", "em"), ("`", "code")):
        parts = out.split(mark)
        if len(parts) % 2:  # marks come in pairs; an odd one is left as text
            out = "".join(f"<{tag}>{p}</{tag}>" if i % 2 else p for i, p in enumerate(parts))
    return out


def render_html(data: ReportData, plot_paths: dict[str, Path]) -> str:
    h = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(TITLE)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(TITLE)}</h1>",
    ]
    for section in sections(data, plot_paths):
        folded = all(isinstance(b, Table) and b.folded for b in section.blocks)
        if section.title is not None and not (folded and section.level > 2):
            h.append(f"<h{section.level}>{html.escape(section.title)}</h{section.level}>")
        for block in section.blocks:
            if isinstance(block, Text):
                h.append(f"<p>{_inline_html(block.text)}</p>")
            elif isinstance(block, Note):
                h.append(f"<p class='note'>{_inline_html(block.text)}</p>")
            elif isinstance(block, Bullets):
                h.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in block.items))
                h.append("</ul>")
            elif isinstance(block, Table) and block.folded:
                h.append(f"<details><summary>{html.escape(block.folded)}</summary>")
                h += [html_table(block.df), "</details>"]
            elif isinstance(block, Table):
                h.append(html_table(block.df))
            else:
                b64 = base64.b64encode(block.path.read_bytes()).decode("ascii")
                h.append(
                    f"<p><img alt='{html.escape(block.name)}' "
                    f"src='data:image/png;base64,{b64}'></p>"
                )
    h.append("</body></html>")
    return "\n".join(h) + "\n"


# --------------------------------------------------------------------------- entry points


def empty_cell_reason(manifest: dict | None) -> Callable[[dict], str]:
    """Why a heatmap cell (strategy or kernel, paging depth, trigger,
    flush_on_yield, vCPUs, dirty ratio: those the heatmap shows) has no
    result: a rule of the run's ``exclude`` matches it, the strategy is not
    valid at that depth, or it is another strategy there (its cells are named
    by that one); else no cell of the grid (or none succeeded)."""
    from sweep.run.grid import is_excluded

    grid = (manifest or {}).get("grid")
    rules = (grid.get("exclude") if isinstance(grid, dict) else None) or []

    def why(cell: dict) -> str:
        written = {k: v for k, v in cell.items() if k != "strategy"}
        if "strategy" in cell:
            written["zap_levels"] = cell["strategy"]
        if rules and is_excluded(written, rules):
            return "excluded"
        depth = cell.get("paging_levels")
        if depth is None or "strategy" not in cell:
            return "no cells"
        try:
            levels = Scenario(paging_levels=depth, zap_levels=cell["strategy"]).zap_levels
        except ScenarioError:
            return "invalid"
        name = strategy_name(levels, depth)
        return f"= {name}" if name != cell["strategy"] else "no cells"

    return why


def write_plots(data: ReportData, plots_dir: Path) -> dict[str, Path]:
    plots_dir.mkdir(parents=True, exist_ok=True)
    f = plots.PLOT_FILES
    drawn = {}
    if data.kernel_curve is not None:
        drawn["kernel_latency_vs_memory"] = plots.plot_kernel_latency_vs_memory(
            data.kernel_curve,
            plots_dir / f["kernel_latency_vs_memory"],
            data.budget_ms,
            data.stall_timeout_s,
        )
    return drawn | {
        "latency_vs_memory": plots.plot_latency_vs_memory(
            data.curve, plots_dir / f["latency_vs_memory"], data.budget_ms, data.stall_timeout_s
        ),
        "rcu_hold_heatmap": plots.plot_rcu_hold_heatmap(
            data.rcu_grid,
            plots_dir / f["rcu_hold_heatmap"],
            data.stall_timeout_s,
            empty_cell_reason(data.manifest),
        ),
        "cost_vs_latency": plots.plot_cost_vs_latency(
            data.plot_summary, plots_dir / f["cost_vs_latency"], data.budget_ms
        ),
    }


def write_report(
    path: str | Path | Results,
    budget_ms: float = DEFAULT_BUDGET_MS,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    group_keys: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write summary.parquet, report.md, report.html and plots/*.png for ``path``.

    ``path`` is a run directory (holding ``results/``) or a results dataset;
    the files go into the run directory, or next to the dataset.  The dataset
    itself is only read: a file that fails the integrity check is skipped,
    named in the report, and left where it is.
    """
    results = path if isinstance(path, Results) else open_results(path)
    source = str(results.run.path if isinstance(path, Results) else path)
    data = collect(results, budget_ms, stall_timeout_s, group_keys, source=source)
    run = results.run
    written: dict[str, Path] = {"summary": run.summary}
    data.summary.write_parquet(run.summary)
    if data.vms is not None:
        written["vms"] = run.vms
        data.vms.write_parquet(run.vms)
    written.update(write_plots(data, run.plots))
    plot_paths = {k: v for k, v in written.items() if k in plots.PLOT_FILES}
    written["report_md"] = run.report_md
    run.report_md.write_text(render_markdown(data, plot_paths, run.report_dir), encoding="utf-8")
    written["report_html"] = run.report_html
    run.report_html.write_text(render_html(data, plot_paths), encoding="utf-8")
    return written


def headline_table(path: Source, budget_ms: float = DEFAULT_BUDGET_MS) -> str:
    """The headline table and verdict lines, for the terminal."""
    lf = summary.scan(path)
    verdict_keys = summary.verdict_keys(lf)
    v = summary.verdicts(lf, budget_ms, verdict_keys)
    table = headline(v, summary.price_of_safety(lf, keys=verdict_keys))
    budget = fmt_seconds(budget_ms / 1e3)
    headers = {**HEADLINE_HEADERS, "under_budget_up_to": f"under {budget} up to"}
    lines = [terminal_table(display(table, headers))]
    if summary.has_kernels(lf):
        kernels = kernel_lines(summary.kernel_verdicts(lf, budget_ms), budget_ms)
        lines += [line.replace("**", "") for line in kernels]
    lines += [line.replace("**", "") for line in verdict_lines(v, budget_ms)]
    n_err = summary.error_count(lf)
    if n_err:
        lines.append(f"{n_err} cell(s) failed; see the report's error list.")
    return "\n".join(lines)
