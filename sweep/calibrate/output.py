"""What a calibration writes and prints: the cost model's YAML and a summary of the fit."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from engine import COST_FIELDS, ENGINE_VERSION, CostModel, Scenario, format_memory

from .fit import CostFit
from .measurements import OBSERVABLES, Measurement


def _fmt_ns(v: float) -> str:
    """Nanoseconds as written in YAML: picosecond resolution, no trailing zeros."""
    text = f"{round(v * 1000) / 1000:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _describe(s: Scenario) -> str:
    return (
        f"{s.paging_levels}-level {format_memory(s.guest_memory)} {s.page_size} "
        f"pop={s.populated_ratio:g} A={s.accessed_ratio:g} D={s.dirty_ratio:g} "
        f"{s.strategy} resched={s.resched} lock={s.mmu_lock} vcpus={s.vcpus}"
        + (" flush_on_yield" if s.flush_on_yield else "")
    )


def quality(fit: CostFit) -> dict[str, dict[str, float]]:
    """Per observable: rows, rms and max |relative residual|, weighted R^2."""
    res = fit.residuals()
    out = {}
    for name in OBSERVABLES:
        sel = [i for i, o in enumerate(fit.observations) if o.observable == name]
        if not sel:
            continue
        r = res[sel]
        worst = sel[int(np.argmax(np.abs(r)))]
        out[name] = {
            "rows": len(sel),
            "rms": float(np.sqrt(np.mean(r**2))),
            "max": float(np.max(np.abs(r))),
            "worst_row": fit.observations[worst].row,
        }
    return out


def render_yaml(
    fit: CostFit,
    *,
    name: str,
    version: int,
    source: str,
    base: CostModel,
    engine: str,
    rounds: int,
    measurements: list[Measurement],
) -> str:
    by_row = {m.row: m.scenario for m in measurements}
    q = quality(fit)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# {name}: fitted by zapsweep-calibrate on {now}.",
        f"# Measurements: {source} ({len(measurements)} rows).",
        f"# Counts from engine={engine} (ENGINE_VERSION {ENGINE_VERSION}); "
        f"undetermined costs from base model {base.name} v{base.version}; "
        f"{rounds} round(s) of fit and re-simulation.",
        "# Non-negative least squares on relative residuals (predicted - measured) / measured.",
        "#",
        "# Fit quality:",
    ]
    for obs_name, v in q.items():
        lines.append(
            f"#   {obs_name}: {v['rows']} rows, rms residual {v['rms']:.2%}, "
            f"max |residual| {v['max']:.2%} (row {v['worst_row']})"
        )
    lines += [
        "#",
        "# Residuals per measured value:",
        "#   row  observable  measured_ns  predicted_ns  residual  scenario",
    ]
    for o, p, r in zip(fit.observations, fit.predicted, fit.residuals(), strict=True):
        lines.append(
            f"#   {o.row:>3}  {o.observable:<10}  {o.measured:>11.0f}  {p:>12.0f}  "
            f"{r:>+8.2%}  {_describe(by_row[o.row])}"
        )
    desc = (
        f"Fitted by zapsweep-calibrate from {Path(source).name} ({len(measurements)} rows); "
        f"{len(fit.determined)} of {len(COST_FIELDS)} costs fitted, the others from "
        f"{base.name}."
    )
    lines += [
        f"name: {name}",
        f"version: {version}",
        f"description: {json.dumps(desc)}",
        "costs:",
    ]
    base_ns = base.as_ns()
    for k in COST_FIELDS:
        v = fit.costs[k]
        if fit.status[k] == "fitted":
            rel = fit.stderr[k] / v if v > 0 else math.nan
            lines.append(
                f"  # fitted: {v:.4g} ns +/- {fit.stderr[k]:.2g} (rel {rel:.1%}); "
                f"{base.name}: {_fmt_ns(base_ns[k])}"
            )
        else:
            lines.append(f"  # undetermined ({fit.reason[k]}): from {base.name}")
        lines.append(f"  {k}: {_fmt_ns(v)}")
    return "\n".join(lines) + "\n"


def summary(fit: CostFit, base: CostModel) -> str:
    """What the CLI prints: the costs and how well they fit."""
    base_ns = base.as_ns()
    rows = [f"{'cost':<24}{'fitted ns':>12}{'+/- ns':>10}{base.name:>14}  status"]
    for k in COST_FIELDS:
        se = "" if math.isnan(fit.stderr[k]) else f"{fit.stderr[k]:.3g}"
        status = fit.status[k] + (f": {fit.reason[k]}" if fit.reason[k] else "")
        rows.append(
            f"{k:<24}{_fmt_ns(fit.costs[k]):>12}{se:>10}{_fmt_ns(base_ns[k]):>14}  {status}"
        )
    for name, v in quality(fit).items():
        rows.append(
            f"{name}: {v['rows']} rows, rms relative residual {v['rms']:.2%}, "
            f"max {v['max']:.2%} (row {v['worst_row']})"
        )
    return "\n".join(rows)
