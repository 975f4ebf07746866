"""The report's plots, drawn with matplotlib's object API (Agg, no pyplot state).

Each function takes an already aggregated ``polars.DataFrame`` (see
``sweep.summary``) and writes one PNG.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from engine import format_memory

from .summary import DISPLAY_ORDER, HEATMAP_PANEL_KEYS, LAYOUT_KEYS, STRATEGY_ORDER

DPI = 110
PAGE_SIZE_STYLE = {"4K": "-", "2M": "--", "1G": ":"}
PAGING_MARKER = {4: "o", 5: "^"}
PLOT_FILES = {
    "kernel_latency_vs_memory": "kernel_latency_vs_memory.png",  # when kernels ran
    "latency_vs_memory": "latency_vs_memory.png",
    "rcu_hold_heatmap": "rcu_hold_heatmap.png",
    "cost_vs_latency": "cost_vs_latency.png",
}


def fmt_seconds(s: float) -> str:
    """Human time for an axis or a cell: 1.5e-3 -> '1.5 ms', 1e4 -> '2.78 h'
    (hours from 10^4 s, days from 10^6 s: no figure of seven digits)."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "—"
    units = (("d", 86400.0, 1e6), ("h", 3600.0, 1e4), ("s", 1.0, 1.0), ("ms", 1e-3, 1e-3),
             ("µs", 1e-6, 1e-6))  # fmt: skip
    for unit, scale, start in units:
        if abs(s) >= start:
            v = s / scale
            return f"{v:.0f} {unit}" if v >= 100 else f"{v:.3g} {unit}"
    return f"{s / 1e-9:.0f} ns" if abs(s / 1e-9) >= 100 else f"{s / 1e-9:.3g} ns"


def strategy_colors(strategies: Sequence[str]) -> dict[str, str]:
    """A stable colour per strategy: named strategies first, in report order."""
    palette = [f"C{i}" for i in range(10)]
    ordered = [s for s in STRATEGY_ORDER if s in strategies]
    ordered += sorted(s for s in strategies if s not in STRATEGY_ORDER)
    named = {s: palette[i] for i, s in enumerate(STRATEGY_ORDER)}
    extra = iter(palette[len(STRATEGY_ORDER) :] * 10)
    return {s: named.get(s) or next(extra) for s in ordered}


def _ordered_strategies(df: pl.DataFrame) -> list[str]:
    present = set(df["strategy"].unique().to_list())
    return [s for s in STRATEGY_ORDER if s in present] + sorted(present - set(STRATEGY_ORDER))


def _time_axis(ax: Axes, axis: str) -> None:
    fmt = FuncFormatter(lambda v, _pos: fmt_seconds(v))
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(fmt)
    target.set_minor_formatter(NullFormatter())


def _empty(fig: Figure, path: Path, message: str) -> Path:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12)
    ax.set_axis_off()
    fig.savefig(path, dpi=DPI)
    return path


LAYOUT_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _variant_name(column: str, value) -> str:
    return f"split {value:g}" if column == "split_ratio" else str(value)


def plot_latency_vs_memory(
    curve: pl.DataFrame, path: Path, budget_ms: float, stall_timeout_s: float
) -> Path:
    """Worst ``max_op_ns`` against guest memory, per strategy, log-log,
    one panel per paging depth, with the budget and the RCU stall timeout."""
    depths = sorted(curve["paging_levels"].unique().to_list()) if curve.height else []
    fig = Figure(figsize=(6.2 * max(len(depths), 1) + 1.0, 5.2), layout="constrained")
    if not depths:
        return _empty(fig, path, "no successful cells to plot")
    colors = strategy_colors(curve["strategy"].unique().to_list())
    axes = fig.subplots(1, len(depths), sharey=True, squeeze=False)[0]
    page_sizes = [p for p in PAGE_SIZE_STYLE if p in set(curve["page_size"].to_list())]
    # Layout fields that vary (summary.verdict_keys): one line each, told
    # apart by marker.
    extra = [c for c in LAYOUT_KEYS if c in curve.columns]
    variants = curve.select(extra).unique(maintain_order=True).sort(extra).rows() if extra else [()]
    markers = dict(zip(variants, itertools.cycle(LAYOUT_MARKERS), strict=False))
    for ax, depth in zip(axes, depths, strict=True):
        sub = curve.filter(pl.col("paging_levels") == depth)
        for strategy in _ordered_strategies(sub):
            for page_size in page_sizes:
                for variant in variants:
                    match = (pl.col("strategy") == strategy) & (pl.col("page_size") == page_size)
                    for c, v in zip(extra, variant, strict=True):
                        match &= pl.col(c) == v
                    line = sub.filter(match).sort("guest_memory")
                    if not line.height:
                        continue
                    detail = ([page_size] if len(page_sizes) > 1 else []) + [
                        _variant_name(c, v) for c, v in zip(extra, variant, strict=True)
                    ]
                    label = f"{strategy} ({', '.join(detail)})" if detail else strategy
                    ax.plot(
                        line["guest_memory"].to_numpy(),
                        line["worst_max_op_ns"].to_numpy() / 1e9,
                        PAGE_SIZE_STYLE[page_size],
                        marker=markers[variant],
                        markersize=4,
                        color=colors[strategy],
                        label=label,
                    )
        ax.axhline(budget_ms / 1e3, color="crimson", lw=1.2, ls="-.")
        ax.axhline(stall_timeout_s, color="black", lw=1.2, ls="-.")
        ax.text(
            0.01,
            budget_ms / 1e3,
            f" budget {fmt_seconds(budget_ms / 1e3)}",
            color="crimson",
            va="bottom",
            transform=ax.get_yaxis_transform(),
        )
        ax.text(
            0.01,
            stall_timeout_s,
            f" RCU stall timeout {fmt_seconds(stall_timeout_s)}",
            color="black",
            va="bottom",
            transform=ax.get_yaxis_transform(),
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        mems = sorted(sub["guest_memory"].unique().to_list())
        step = max(1, math.ceil(len(mems) / 10))
        ax.set_xticks(mems[::step], [format_memory(int(m)) for m in mems[::step]], rotation=45)
        ax.xaxis.set_minor_formatter(NullFormatter())
        _time_axis(ax, "y")
        ax.set_title(f"{depth}-level paging")
        ax.set_xlabel("guest memory")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("worst single operation (max_op_ns)")
    legend: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    rank = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    labels = sorted(legend, key=lambda x: (rank.get(x.split(" (")[0], len(rank)), x))
    fig.legend([legend[x] for x in labels], labels, loc="outside right center", fontsize=9)
    fig.suptitle("Worst single operation vs guest memory (worst over all other fields)")
    fig.savefig(path, dpi=DPI)
    return path


TRIGGER_TITLES = {"memslot": "memslot deletion", "vm_destroy": "VM destruction"}
# Old kernels warm, new ones cool.  Kernels often give the same curve (5.18,
# 6.6 and 6.9-prove-mmu zap alike): hollow markers of falling size, so that
# coinciding curves show as nested marks.
KERNEL_PALETTE = ("#b2182b", "#ef8a62", "#e6ab02", "#1b9e77", "#66a61e", "#2166ac", "#762a83")
KERNEL_MARKERS = ("o", "s", "D", "^", "v", "P", "X")


def _kernel_styles(kernels: Sequence[str]) -> dict[str, dict]:
    """Line style per kernel, in version order (the known presets first)."""
    known = DISPLAY_ORDER["kernel"]
    ordered = [k for k in known if k in kernels] + sorted(k for k in kernels if k not in known)
    rank = {k: i for i, k in enumerate([*known, *ordered])}
    out = {}
    for k in ordered:
        i = rank[k]
        out[k] = dict(
            color=KERNEL_PALETTE[i % len(KERNEL_PALETTE)],
            marker=KERNEL_MARKERS[i % len(KERNEL_MARKERS)],
            markersize=max(3.5, 11 - 1.2 * (i % len(KERNEL_MARKERS))),
            markerfacecolor="none",
            markeredgewidth=1.3,
            linewidth=1.3,
            linestyle="--" if "-" in k else "-",
        )
    return out


def plot_kernel_latency_vs_memory(
    curve: pl.DataFrame, path: Path, budget_ms: float, stall_timeout_s: float
) -> Path:
    """Per kernel, worst single operation (top) and worst RCU hold (bottom)
    against guest memory, one column per trigger, worst over every other
    field; the budget and the RCU stall timeout drawn."""
    triggers = [t for t in DISPLAY_ORDER["trigger"] if t in set(curve["trigger"].to_list())]
    fig = Figure(figsize=(5.6 * max(len(triggers), 1) + 1.6, 8.4), layout="constrained")
    if not curve.height or not triggers:
        return _empty(fig, path, "no successful kernel cells to plot")
    styles = _kernel_styles(curve["kernel"].unique().to_list())
    axes = fig.subplots(2, len(triggers), sharex=True, sharey="row", squeeze=False)
    rows = (
        ("worst_max_op_ns", "worst single operation", budget_ms / 1e3, "budget"),
        ("worst_max_rcu_hold_ns", "worst RCU hold", stall_timeout_s, "RCU stall timeout"),
    )
    mems = sorted(curve["guest_memory"].unique().to_list())
    for j, trigger in enumerate(triggers):
        sub = curve.filter(pl.col("trigger") == trigger)
        for i, (column, label, limit, what) in enumerate(rows):
            ax = axes[i][j]
            for kernel, style in styles.items():
                line = sub.filter(pl.col("kernel") == kernel).sort("guest_memory")
                if not line.height:
                    continue
                ax.plot(
                    line["guest_memory"].to_numpy(),
                    line[column].to_numpy() / 1e9,
                    label=kernel,
                    **style,
                )
            ax.axhline(limit, color="crimson" if i == 0 else "black", lw=1.2, ls="-.")
            ax.text(
                0.01,
                limit,
                f" {what} {fmt_seconds(limit)}",
                color="crimson" if i == 0 else "black",
                va="bottom",
                transform=ax.get_yaxis_transform(),
            )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            _time_axis(ax, "y")
            ax.grid(True, which="major", alpha=0.3)
            if j == 0:
                ax.set_ylabel(label)
            if i == 0:
                ax.set_title(TRIGGER_TITLES.get(trigger, trigger))
            else:
                ax.set_xticks(mems, [format_memory(int(m)) for m in mems], rotation=45)
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlabel("guest memory")
    legend: dict[str, object] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    labels = [k for k in styles if k in legend]
    fig.legend([legend[k] for k in labels], labels, loc="outside right center", fontsize=9,
               title="kernel")  # fmt: skip
    fig.suptitle(
        "Kernels: worst operation and RCU hold vs guest memory (worst over the rest; "
        "nested marks: kernels with the same curve)"
    )
    fig.savefig(path, dpi=DPI)
    return path


def _round_sig(x: float, digits: int = 2, how: Callable[[float], float] = round) -> float:
    """``x`` at ``digits`` significant digits, rounded by ``how`` (math.ceil: up)."""
    unit = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return float(f"{how(x / unit * (1 + 1e-12 if how is math.floor else 1)) * unit:.{digits}g}")


def log_ticks(vmin: float, vmax: float, most: int = 8) -> list[float]:
    """Ticks for a logarithmic scale from ``vmin`` to ``vmax``: the finest of
    1-2-5, 1-3 or 1 steps per decade that gives at most ``most`` (then every
    other decade); on a narrow range (fewer than three of those), four ticks
    evenly spaced in log, at two significant digits."""
    decades = range(math.floor(math.log10(vmin)) - 1, math.ceil(math.log10(vmax)) + 1)
    for steps in ((1, 2, 5), (1, 3), (1,)):  # the finest that fits
        ticks = [
            step * 10.0**decade
            for decade in decades
            for step in steps
            if vmin * (1 - 1e-9) <= step * 10.0**decade <= vmax * (1 + 1e-9)
        ]
        if len(ticks) <= most:
            break
    while len(ticks) > most:  # many decades: every other one
        ticks = ticks[::2]
    if len(ticks) < 3:  # the ends rounded inwards, two between
        lo, a, b, hi = np.geomspace(vmin, vmax, 4)
        ticks = sorted({_round_sig(lo, how=math.ceil), _round_sig(a), _round_sig(b),
                        _round_sig(hi, how=math.floor)})  # fmt: skip
    return [t for t in ticks if vmin * (1 - 1e-9) <= t <= vmax * (1 + 1e-9)] or [vmin, vmax]


def _nice(x: float, down: bool) -> float:
    """The 1-2-5 value next to ``x`` (below it, or above), if within 5% of it."""
    decade = 10.0 ** math.floor(math.log10(x))
    steps = [s * decade for s in (1, 2, 5, 10)]
    nice = (
        max(s for s in steps if s <= x * (1 + 1e-9))
        if down
        else min(s for s in steps if s >= x * (1 - 1e-9))
    )
    return nice if abs(nice - x) <= 0.05 * x else x


def color_range(values: np.ndarray) -> tuple[float, float]:
    """The positive range of ``values``, widened to at least a factor 1.5, its
    ends moved to a 1-2-5 value within 5% (so that they carry a tick)."""
    positive = values[values > 0]
    vmin = float(positive.min()) if positive.size else 1e-9
    vmax = float(positive.max()) if positive.size else 1e-8
    if vmax < vmin * 1.5:
        mid = math.sqrt(vmin * vmax)
        vmin, vmax = mid / 1.25, mid * 1.25
    return _nice(vmin, down=True), _nice(vmax, down=False)


# An empty heatmap cell says why the grid has no result there (``why_empty``);
# a panel empty throughout says it once, in full.
EMPTY_PANEL_LABELS = {
    "excluded": "excluded by the grid",
    "invalid": "not a valid strategy\nat this depth",
    "no cells": "no cells",
}


@dataclass(frozen=True)
class HeatmapLayout:
    """Which fields make the heatmap's rows of panels and its columns.

    Rows: the kernel, where the dataset has more than one (or any cell without
    one), and the strategy, unless the kernel sets it (``zap_levels: kernel``:
    then each panel names its strategy).  Columns: the paging depth, always;
    the trigger and ``flush_on_yield`` where they vary on their own (a
    ``flush_on_yield`` that each kernel and trigger set is no column)."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    fixed: dict  # fields with one value throughout (named in the title)


def _varies_alone(grid: pl.DataFrame, key: str, keys: Sequence[str]) -> bool:
    """Whether ``key`` takes two values where every other of ``keys`` is the same."""
    others = [k for k in keys if k != key]
    return grid.select(keys).unique().height > grid.select(others).unique().height


def heatmap_layout(grid: pl.DataFrame) -> HeatmapLayout:
    candidates = [k for k in ("strategy", *HEATMAP_PANEL_KEYS) if k in grid.columns]
    keys = [*candidates, "vcpus", "dirty_ratio"]
    many = {k for k in candidates if grid[k].n_unique() > 1}
    fixed = {k: grid[k][0] for k in candidates if k not in many and k != "paging_levels"}
    kernels = "kernel" in many
    has_kernel = "kernel" in grid.columns and grid["kernel"].is_not_null().any()
    rows = ["kernel"] if kernels else []
    if not has_kernel or ("strategy" in many and _varies_alone(grid, "strategy", keys)):
        rows.append("strategy")
        fixed.pop("strategy", None)
    alone = [k for k in ("trigger", "flush_on_yield") if k in many and _varies_alone(grid, k, keys)]
    return HeatmapLayout(tuple(rows), ("paging_levels", *alone), fixed)


def _is(key: str, value) -> pl.Expr:
    return pl.col(key).is_null() if value is None else pl.col(key) == value


def _panel_order(keys: Sequence[str]) -> Callable[[tuple], tuple]:
    """Sort key of a panel's values: strategies, kernels and triggers in
    DISPLAY_ORDER (a cell without a kernel last), numbers and flags as they sort."""

    def rank(key: str, value) -> tuple:
        if value is None:
            return (2, 0, "")
        order = DISPLAY_ORDER.get(key, ())
        if value in order:
            return (0, order.index(value), "")
        return (1, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))

    return lambda values: tuple(rank(k, v) for k, v in zip(keys, values, strict=True))


def _panels(grid: pl.DataFrame, keys: Sequence[str]) -> list[tuple]:
    if not keys:
        return [()]
    return sorted(set(grid.select(keys).rows()), key=_panel_order(keys))


def _field_label(key: str, value) -> str:
    if key == "paging_levels":
        return f"{value}-level paging"
    if key == "kernel":
        return "no kernel preset" if value is None else f"kernel {value}"
    if key == "trigger":
        return TRIGGER_TITLES.get(value, str(value))
    if key == "flush_on_yield":
        return f"flush_on_yield {'on' if value else 'off'}"
    return str(value)


def _label(keys: Sequence[str], values: Sequence) -> str:
    return "\n".join(_field_label(k, v) for k, v in zip(keys, values, strict=True))


def plot_rcu_hold_heatmap(
    grid: pl.DataFrame,
    path: Path,
    stall_timeout_s: float,
    why_empty: Callable[[dict], str] | None = None,
) -> Path:
    """Worst RCU hold over vCPUs (x) and dirty ratio (y): a row of panels per
    strategy (or kernel, and strategy: ``heatmap_layout``), a column per paging
    depth (and trigger and ``flush_on_yield``, where they vary); one
    logarithmic colour scale.  An empty cell says why: ``why_empty`` of the
    cell's fields gives a short label ("excluded" by the grid's rules, "invalid"
    for the engine, "= per_level" for a strategy that is another at this depth,
    "no cells"); a panel empty throughout says it once."""
    if not grid.height:
        return _empty(Figure(figsize=(6, 3)), path, "no successful cells to plot")
    why_empty = why_empty or (lambda _cell: "no cells")
    layout = heatmap_layout(grid)
    rows, columns = _panels(grid, layout.rows), _panels(grid, layout.columns)
    named = "strategy" not in layout.rows and "strategy" not in layout.fixed  # per panel
    vcpus = sorted(grid["vcpus"].unique().to_list())
    dirty = sorted(grid["dirty_ratio"].unique().to_list())
    vmin, vmax = color_range(grid["worst_max_rcu_hold_ns"].to_numpy() / 1e9)
    norm = LogNorm(vmin=vmin, vmax=vmax)
    panel_w = max(0.8 * len(vcpus), 1.4)  # room for a column's title
    panel_h = max(0.5 * len(dirty), 0.7) + 0.3 * named
    fig = Figure(
        figsize=(1.6 + panel_w * len(columns) + 1.6, 1.3 + panel_h * len(rows) + 0.9),
        layout="constrained",
    )
    axes = fig.subplots(len(rows), len(columns), squeeze=False, sharex=True, sharey=True)
    image = None
    for i, row_values in enumerate(rows):
        for j, column_values in enumerate(columns):
            ax = axes[i][j]
            where = {
                **dict(zip(layout.rows, row_values, strict=True)),
                **dict(zip(layout.columns, column_values, strict=True)),
            }
            sub = grid.filter(*(_is(k, v) for k, v in where.items())) if where else grid
            m = np.full((len(dirty), len(vcpus)), np.nan)
            for d, v, hold in (
                sub.group_by("dirty_ratio", "vcpus")
                .agg(pl.col("worst_max_rcu_hold_ns").max())
                .rows()
            ):
                m[dirty.index(d), vcpus.index(v)] = hold / 1e9
            image = ax.imshow(
                np.ma.masked_invalid(np.clip(m, vmin, None)),
                norm=norm,
                cmap="magma_r",
                aspect="auto",
                origin="lower",
            )
            ax.set_facecolor("#eeeeee")
            reasons = {
                (r, c): why_empty({**where, "vcpus": vcpus[c], "dirty_ratio": dirty[r]})
                for (r, c), hold in np.ndenumerate(m)
                if np.isnan(hold)
            }
            whole = len(reasons) == m.size and len(set(reasons.values())) == 1
            if whole:
                (reason,) = set(reasons.values())
                ax.text(
                    0.5, 0.5, EMPTY_PANEL_LABELS.get(reason, reason), transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="#555555", style="italic",
                )  # fmt: skip
            for (r, c), hold in np.ndenumerate(m):
                if np.isnan(hold):
                    if not whole:
                        ax.text(c, r, reasons[r, c], ha="center", va="center",
                                fontsize=7, color="#555555", style="italic")  # fmt: skip
                    continue
                stalled = hold >= stall_timeout_s
                ax.text(
                    c,
                    r,
                    fmt_seconds(hold) + ("\nSTALL" if stalled else ""),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm(max(hold, vmin)) > 0.55 else "black",
                    fontweight="bold" if stalled else "normal",
                )
            ax.set_xticks(range(len(vcpus)), [str(v) for v in vcpus])
            ax.set_yticks(range(len(dirty)), [f"{d:g}" for d in dirty])
            title = [_label(layout.columns, column_values)] if i == 0 else []
            if named and sub.height:  # the strategy the kernel zaps with here
                title.append(", ".join(_ordered_strategies(sub)))
            if title:
                ax.set_title("\n".join(title), fontsize=9 if i == 0 else 8)
            if j == 0:
                label = "\n".join(filter(None, [_label(layout.rows, row_values), "dirty ratio"]))
                ax.set_ylabel(label, rotation=0, ha="right", va="center")
            if i == len(rows) - 1:
                ax.set_xlabel("vCPUs")
    cbar = fig.colorbar(image, ax=axes, shrink=0.8, label="worst RCU hold (max_rcu_hold_ns)")
    cbar.set_ticks(log_ticks(vmin, vmax))
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt_seconds(v)))
    cbar.ax.yaxis.set_minor_formatter(NullFormatter())
    fixed = ", ".join(_field_label(k, v) for k, v in layout.fixed.items() if v is not None)
    fig.suptitle(
        f"Worst RCU hold (stall at {fmt_seconds(stall_timeout_s)}){'; ' + fixed if fixed else ''}"
        "\nworst over guest memory, page size and every other field",
        fontsize=10,
    )
    fig.savefig(path, dpi=DPI)
    return path


def plot_cost_vs_latency(summary: pl.DataFrame, path: Path, budget_ms: float) -> Path:
    """Median total zap time against worst single operation, one point per
    summary group, coloured by strategy: the trade-off of the seed's reply."""
    data = summary.filter(pl.col("cells") > 0) if summary.height else summary
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    if not data.height:
        return _empty(fig, path, "no successful cells to plot")
    ax = fig.add_subplot()
    colors = strategy_colors(data["strategy"].unique().to_list())
    depths = sorted(data["paging_levels"].unique().to_list()) if "paging_levels" in data else [None]
    for strategy in _ordered_strategies(data):
        for depth in depths:
            sub = data.filter(pl.col("strategy") == strategy)
            if depth is not None:
                sub = sub.filter(pl.col("paging_levels") == depth)
            if not sub.height:
                continue
            label = strategy if depth is None or len(depths) == 1 else f"{strategy}, {depth}-level"
            ax.scatter(
                sub["worst_max_op_ns"].to_numpy() / 1e9,
                sub["median_total_ns"].to_numpy() / 1e9,
                s=22,
                alpha=0.75,
                color=colors[strategy],
                marker=PAGING_MARKER.get(depth, "o"),
                label=label,
            )
    ax.axvline(budget_ms / 1e3, color="crimson", lw=1.2, ls="-.")
    ax.text(
        budget_ms / 1e3,
        0.98,
        f" budget {fmt_seconds(budget_ms / 1e3)}",
        color="crimson",
        va="top",
        transform=ax.get_xaxis_transform(),
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _time_axis(ax, "x")
    _time_axis(ax, "y")
    ax.set_xlabel("worst single operation (max_op_ns, worst of the group)")
    ax.set_ylabel("total zap time (total_ns, median of the group)")
    ax.set_title("Total cost vs worst latency: one point per summary group")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=DPI)
    return path
