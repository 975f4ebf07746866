"""The report's three plots, drawn with matplotlib's object API (Agg, no pyplot state).

Each function takes an already aggregated ``polars.DataFrame`` (see
``sweep.summary``) and writes one PNG.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from engine import format_memory

from .summary import HEATMAP_PANEL_KEYS, LAYOUT_KEYS, STRATEGY_ORDER

DPI = 110
PAGE_SIZE_STYLE = {"4K": "-", "2M": "--", "1G": ":"}
PAGING_MARKER = {4: "o", 5: "^"}
PLOT_FILES = {
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


def _round_sig(x: float, digits: int = 2) -> float:
    return float(f"{x:.{digits}g}")


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
    if len(ticks) < 3:
        ticks = sorted({_round_sig(t) for t in np.geomspace(vmin, vmax, 4)})
    return [t for t in ticks if vmin * (1 - 1e-9) <= t <= vmax * (1 + 1e-9)] or [vmin, vmax]


def color_range(values: np.ndarray) -> tuple[float, float]:
    """The positive range of ``values``, widened to at least a factor 1.5."""
    positive = values[values > 0]
    vmin = float(positive.min()) if positive.size else 1e-9
    vmax = float(positive.max()) if positive.size else 1e-8
    if vmax < vmin * 1.5:
        mid = math.sqrt(vmin * vmax)
        vmin, vmax = mid / 1.25, mid * 1.25
    return vmin, vmax


# An empty heatmap cell says why the grid has no result there (``why_empty``);
# a panel empty throughout says it once, in full.
EMPTY_PANEL_LABELS = {
    "excluded": "excluded by the grid",
    "invalid": "not a valid strategy\nat this depth",
    "no cells": "no cells",
}


def _panel_title(keys: Sequence[str], values: Sequence) -> str:
    parts = []
    for k, v in zip(keys, values, strict=True):
        if k == "paging_levels":
            parts.append(f"{v}-level paging")
        elif k == "flush_on_yield":
            parts.append(f"flush_on_yield={'on' if v else 'off'}")
        else:
            parts.append(f"{k}={v}")
    return "\n".join(parts)


def plot_rcu_hold_heatmap(
    grid: pl.DataFrame,
    path: Path,
    stall_timeout_s: float,
    why_empty: Callable[[dict], str] | None = None,
) -> Path:
    """Worst RCU hold over vCPUs (x) and dirty ratio (y): a row of panels per
    strategy, a column per paging depth (and kernel) and ``flush_on_yield``;
    one logarithmic colour scale.  An empty cell says why: ``why_empty`` of the
    cell's fields gives a short label ("excluded" by the grid's rules, "invalid"
    for the engine, "= per_level" for a strategy that is another at this depth,
    "no cells"); a panel empty throughout says it once."""
    if not grid.height:
        return _empty(Figure(figsize=(6, 3)), path, "no successful cells to plot")
    why_empty = why_empty or (lambda _cell: "no cells")
    strategies = _ordered_strategies(grid)
    panel_keys = [k for k in HEATMAP_PANEL_KEYS if k in grid.columns]
    panels = sorted(set(grid.select(panel_keys).rows()))
    vcpus = sorted(grid["vcpus"].unique().to_list())
    dirty = sorted(grid["dirty_ratio"].unique().to_list())
    vmin, vmax = color_range(grid["worst_max_rcu_hold_ns"].to_numpy() / 1e9)
    norm = LogNorm(vmin=vmin, vmax=vmax)
    fig = Figure(
        figsize=(
            1.4 + 0.8 * max(len(vcpus), 2) * len(panels) + 1.6,
            1.0 + 0.5 * max(len(dirty), 2) * len(strategies) + 0.9,
        ),
        layout="constrained",
    )
    axes = fig.subplots(len(strategies), len(panels), squeeze=False, sharex=True, sharey=True)
    image = None
    for i, strategy in enumerate(strategies):
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            where = dict(zip(panel_keys, panel, strict=True))
            sub = grid.filter(pl.col("strategy") == strategy)
            for k, v in where.items():
                sub = sub.filter(pl.col(k) == v)
            m = np.full((len(dirty), len(vcpus)), np.nan)
            for d, v, hold in sub.select("dirty_ratio", "vcpus", "worst_max_rcu_hold_ns").rows():
                m[dirty.index(d), vcpus.index(v)] = hold / 1e9
            image = ax.imshow(
                np.ma.masked_invalid(np.clip(m, vmin, None)),
                norm=norm,
                cmap="magma_r",
                aspect="auto",
                origin="lower",
            )
            ax.set_facecolor("#eeeeee")
            reasons = {}
            for (r, c), hold in np.ndenumerate(m):
                if np.isnan(hold):
                    cell = {
                        **where,
                        "strategy": strategy,
                        "vcpus": vcpus[c],
                        "dirty_ratio": dirty[r],
                    }
                    reasons[r, c] = why_empty(cell)
            if len(reasons) == m.size and len(set(reasons.values())) == 1:
                (reason,) = set(reasons.values())
                ax.text(
                    0.5, 0.5, EMPTY_PANEL_LABELS.get(reason, reason), transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="#555555", style="italic",
                )  # fmt: skip
            for (r, c), hold in np.ndenumerate(m):
                if np.isnan(hold):
                    if len(reasons) < m.size or len(set(reasons.values())) > 1:
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
            if i == 0:
                ax.set_title(_panel_title(panel_keys, panel), fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{strategy}\ndirty ratio")
            if i == len(strategies) - 1:
                ax.set_xlabel("vCPUs")
    cbar = fig.colorbar(image, ax=axes, shrink=0.8, label="worst RCU hold (max_rcu_hold_ns)")
    cbar.set_ticks(log_ticks(vmin, vmax))
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt_seconds(v)))
    cbar.ax.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(
        f"Worst RCU hold (stall at {fmt_seconds(stall_timeout_s)})\n"
        "worst over guest memory, page size and every other field",
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
