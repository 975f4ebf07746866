"""The report's plots, drawn with matplotlib's object API (Agg, no pyplot state).

Each function takes an already aggregated ``polars.DataFrame`` (see
``sweep.summary``) and writes one PNG.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from engine import format_memory

from .summary import DISPLAY_ORDER, LAYOUT_KEYS, STRATEGY_ORDER

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
    """Human time for an axis or a cell: 1.5e-3 -> '1.5 ms'."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(s) >= scale or unit == "ns":
            v = s / scale
            return f"{v:.0f} {unit}" if v >= 100 else f"{v:.3g} {unit}"
    raise AssertionError("unreachable")


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


def plot_rcu_hold_heatmap(grid: pl.DataFrame, path: Path, stall_timeout_s: float) -> Path:
    """Worst RCU hold over vCPUs (x) and dirty ratio (y); one row per strategy,
    one column per ``flush_on_yield`` value; shared logarithmic colour scale."""
    if not grid.height:
        return _empty(Figure(figsize=(6, 3)), path, "no successful cells to plot")
    strategies = _ordered_strategies(grid)
    flushes = sorted(grid["flush_on_yield"].unique().to_list())
    vcpus = sorted(grid["vcpus"].unique().to_list())
    dirty = sorted(grid["dirty_ratio"].unique().to_list())
    values = grid["worst_max_rcu_hold_ns"].to_numpy() / 1e9
    positive = values[values > 0]
    vmin = float(positive.min()) if positive.size else 1e-9
    vmax = max(float(values.max()), vmin * 10)
    norm = LogNorm(vmin=vmin, vmax=vmax)
    fig = Figure(
        figsize=(
            1.0 + 0.75 * len(vcpus) * len(flushes) + 1.6,
            1.0 + 0.45 * len(dirty) * len(strategies) + 0.8,
        ),
        layout="constrained",
    )
    axes = fig.subplots(len(strategies), len(flushes), squeeze=False, sharex=True, sharey=True)
    image = None
    for i, strategy in enumerate(strategies):
        for j, flush in enumerate(flushes):
            ax = axes[i][j]
            sub = grid.filter(
                (pl.col("strategy") == strategy) & (pl.col("flush_on_yield") == flush)
            )
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
            for (r, c), hold in np.ndenumerate(m):
                if np.isnan(hold):
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
                ax.set_title(f"flush_on_yield={'on' if flush else 'off'}")
            if j == 0:
                ax.set_ylabel(f"{strategy}\ndirty ratio")
            if i == len(strategies) - 1:
                ax.set_xlabel("vCPUs")
    cbar = fig.colorbar(image, ax=axes, shrink=0.8, label="worst RCU hold (max_rcu_hold_ns)")
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt_seconds(v)))
    cbar.ax.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"Worst RCU hold (stall at {fmt_seconds(stall_timeout_s)})")
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
