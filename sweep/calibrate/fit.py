"""zapsweep-calibrate: fit a cost model's per-event costs to measured root zaps.

``zapsweep-calibrate MEASUREMENTS [--name NAME] [--out DIR] [--base MODEL]
[--engine fast|reference]`` reads a CSV or Parquet file (or a directory of
Parquet files, e.g. a sweep's ``results/``) with one measured zap per row:
the scenario columns (the fields of ``engine.Scenario``) plus a measured
``total_ns`` and/or ``max_op_ns``.

How the fit works:

* Every row's scenario is simulated; ``engine.event_counts`` gives the events
  that make up its ``total_ns`` (the same counts the engine charges, so the
  fit and the simulation cannot disagree about what is counted), and
  ``total_ns = sum(count * cost)`` is linear in the 10 costs.
* ``max_op_ns`` is the cost of one operation (the worst), also linear in the
  costs but in *that operation's* events, which the engine does not report.
  They are measured by finite differences: re-simulating with one cost raised
  by 1 ns raises ``max_op_ns`` by exactly that operation's count of the
  event.  This is a linearisation around the current model (the worst
  operation could change), hence the iteration below.
* The stacked system is solved by non-negative least squares
  (``scipy.optimize.nnls``) on *relative* residuals (each row divided by its
  measurement), so a 10 ms zap weighs as much as a 10 s one.
* Counts can depend on the costs (``resched=tick`` yields every
  ``resched_interval_us`` of zap time; which operation is the worst), so the
  model is re-simulated with the fitted costs and refitted until the counts
  stop changing (at most ``MAX_ITERATIONS`` rounds).
* A cost is *undetermined* when no row has its event (an all-zero column),
  when its column is a linear combination of others (collinear, e.g.
  ``flush_per_vcpu_ns`` when every row has the same ``vcpus``), or when the
  noise of the fit leaves it a relative standard error above
  ``--max-rel-se``.  Undetermined costs are taken from the base model
  (``--base``, default seed-2022) and their share is subtracted before the
  fit; the output says which costs they are and why.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml
from scipy.optimize import nnls

from engine import (
    COST_FIELDS,
    ENGINE_VERSION,
    SCENARIO_FIELDS,
    CostModel,
    Scenario,
    ScenarioError,
    event_counts,
    format_memory,
    load_cost_model,
    simulate,
)
from engine import DEFAULT_ENGINE as _DEFAULT_ENGINE
from engine.cost_model import cost_model_dir

OBSERVABLES = ("total_ns", "max_op_ns")
# Scenario columns a measurement must give: without them a row would silently
# take Scenario's defaults (a 1 GiB guest...).  The other Scenario fields
# (host_phys_bits, resched, resched_interval_us, mmu_lock, flush_on_yield,
# rcu_stall_timeout_s, seed) are optional and default as in Scenario.
REQUIRED_COLUMNS = (
    "paging_levels",
    "guest_memory",
    "page_size",
    "populated_ratio",
    "accessed_ratio",
    "dirty_ratio",
    "vcpus",
)
STRATEGY_COLUMNS = ("zap_levels", "strategy")  # either one
MAX_ITERATIONS = 5
DEFAULT_MAX_REL_SE = 0.2
# Singular values below this fraction of the largest (columns scaled to unit
# norm) mark exactly collinear costs.
COLLINEAR_RTOL = 1e-9
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CalibrationError(ValueError):
    """A measurement file or option that cannot be fitted; the message names it."""


@dataclass(frozen=True)
class Measurement:
    """One measured zap: ``row`` is 1-based in the file (header excluded)."""

    row: int
    scenario: Scenario
    total_ns: float | None
    max_op_ns: float | None


@dataclass(frozen=True)
class Observation:
    """One equation of the fit: ``measured ~ counts . costs``."""

    row: int
    observable: str  # "total_ns" | "max_op_ns"
    measured: float
    counts: tuple[float, ...]  # per COST_FIELDS


@dataclass(frozen=True)
class CostFit:
    costs: dict[str, float]  # ns, per COST_FIELDS
    status: dict[str, str]  # "fitted" | "undetermined"
    reason: dict[str, str]  # why undetermined ("" when fitted)
    stderr: dict[str, float]  # ns, nan when undetermined
    observations: tuple[Observation, ...]
    predicted: tuple[float, ...]  # per observation, under ``costs``

    @property
    def determined(self) -> list[str]:
        return [k for k in COST_FIELDS if self.status[k] == "fitted"]

    def residuals(self) -> np.ndarray:
        """Relative residuals (predicted - measured) / measured."""
        meas = np.array([o.measured for o in self.observations], dtype=float)
        pred = np.array(self.predicted, dtype=float)
        return (pred - meas) / np.maximum(meas, 1.0)


# ---------------------------------------------------------------- reading


def read_table(path: str | Path) -> pl.DataFrame:
    """A CSV file, a Parquet file, or a directory of (hive-partitioned) Parquet."""
    p = Path(path)
    if not p.exists():
        raise CalibrationError(f"{p}: no such file or directory")
    try:
        if p.is_dir():
            return pl.scan_parquet(p / "**" / "*.parquet", hive_partitioning=True).collect()
        if p.suffix.lower() in (".parquet", ".pq"):
            return pl.read_parquet(p)
        if p.suffix.lower() in (".csv", ".txt"):
            return pl.read_csv(p, infer_schema_length=None)
    except pl.exceptions.PolarsError as e:
        raise CalibrationError(f"{p}: cannot read it: {e}") from e
    raise CalibrationError(f"{p}: unknown format {p.suffix!r}: give a .csv or .parquet file")


def _as_bool(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def parse_measurements(df: pl.DataFrame, source: str = "measurements") -> list[Measurement]:
    """Check the table and build one Measurement per row."""
    if "status" in df.columns:  # a sweep's results: keep the cells that ran
        df = df.filter(pl.col("status") == "ok")
    observed = [c for c in OBSERVABLES if c in df.columns]
    if not observed:
        raise CalibrationError(
            f"{source}: missing column: a measured 'total_ns' and/or 'max_op_ns' "
            f"(found {df.columns})"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if not any(c in df.columns for c in STRATEGY_COLUMNS):
        missing.append("zap_levels (or strategy)")
    if missing:
        raise CalibrationError(f"{source}: missing scenario column(s): {', '.join(missing)}")
    for col in observed:
        if not df.schema[col].is_numeric():
            raise CalibrationError(
                f"{source}: column {col!r} must hold numbers of nanoseconds, found {df.schema[col]}"
            )
    if df.height == 0:
        raise CalibrationError(f"{source}: no measurements (0 rows)")
    strategy_col = "zap_levels" if "zap_levels" in df.columns else "strategy"
    fields = [f for f in SCENARIO_FIELDS if f != "zap_levels" and f in df.columns]
    out = []
    for i, rec in enumerate(df.iter_rows(named=True), start=1):
        kwargs: dict[str, Any] = {}
        for f in [*fields, strategy_col]:
            value = rec[f]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if f in REQUIRED_COLUMNS or f == strategy_col:
                    raise CalibrationError(f"{source}: row {i}: column {f!r} is empty")
                continue
            if f == "flush_on_yield":
                value = _as_bool(value)
            kwargs["zap_levels" if f == strategy_col else f] = value
        try:
            scenario = Scenario(**kwargs)
        except ScenarioError as e:
            raise CalibrationError(
                f"{source}: row {i}: unknown scenario value {e.field}={e.value!r}: "
                f"allowed {e.allowed}"
            ) from e
        values = {}
        for col in OBSERVABLES:
            v = rec.get(col) if col in observed else None
            if v is None and col in observed and len(observed) == 1:
                raise CalibrationError(f"{source}: row {i}: measured {col} is empty")
            if v is not None:
                if not math.isfinite(v):
                    raise CalibrationError(f"{source}: row {i}: {col}={v} is not a time")
                if v < 0:
                    raise CalibrationError(
                        f"{source}: row {i}: negative time {col}={v}: times are ns >= 0"
                    )
            values[col] = None if v is None else float(v)
        if values["total_ns"] is None and values["max_op_ns"] is None:
            raise CalibrationError(f"{source}: row {i}: neither total_ns nor max_op_ns measured")
        out.append(Measurement(i, scenario, values["total_ns"], values["max_op_ns"]))
    return out


# ---------------------------------------------------------------- counting


def model_with(costs_ns: dict[str, float], name: str = "fit") -> CostModel:
    return load_cost_model({"name": name, "version": 1, "costs": dict(costs_ns)})


def observations(
    measurements: list[Measurement], model: CostModel, engine: str
) -> list[Observation]:
    """The fit's equations under ``model``: event counts from the engine."""
    costs = model.as_ns()
    obs = []
    for m in measurements:
        result = simulate(m.scenario, engine=engine, cost_model=model)
        if m.total_ns is not None:
            counts = event_counts(result, m.scenario)
            obs.append(
                Observation(m.row, "total_ns", m.total_ns, tuple(counts[k] for k in COST_FIELDS))
            )
        if m.max_op_ns is not None:
            # The worst operation's events: +1 ns on one cost adds exactly
            # that operation's count of the event to max_op_ns.
            op = []
            for key in COST_FIELDS:
                bumped = model_with({**costs, key: costs[key] + 1.0})
                r = simulate(m.scenario, engine=engine, cost_model=bumped)
                op.append(max(r.max_op_ns - result.max_op_ns, 0))
            obs.append(Observation(m.row, "max_op_ns", m.max_op_ns, tuple(op)))
    return obs


# ---------------------------------------------------------------- fitting


def _too_few_rows(n: int, involved: list[str]) -> CalibrationError:
    return CalibrationError(
        f"too few rows: {n} measured value(s) cannot determine the {len(involved)} costs "
        f"their events involve ({', '.join(involved)}) and check the fit; "
        f"need at least {len(involved) + 1}"
    )


def fit_costs(
    obs: list[Observation], base: CostModel, max_rel_se: float = DEFAULT_MAX_REL_SE
) -> CostFit:
    """Weighted NNLS of the costs on the observations' event counts."""
    if not obs:
        raise CalibrationError("no measurements to fit")
    base_ns = base.as_ns()
    a = np.array([o.counts for o in obs], dtype=float)
    b = np.array([o.measured for o in obs], dtype=float)
    w = 1.0 / np.maximum(b, 1.0)  # relative residuals
    aw, bw = a * w[:, None], b * w
    norms = np.linalg.norm(aw, axis=0)
    reason = {k: "" for k in COST_FIELDS}
    for j, k in enumerate(COST_FIELDS):
        if norms[j] == 0:
            reason[k] = "no measured zap has this event (all counts zero)"
    involved = [k for k in COST_FIELDS if not reason[k]]
    if not involved:
        raise CalibrationError("the measured zaps contain no events at all")
    if len(obs) <= len(involved):
        raise _too_few_rows(len(obs), involved)

    def influence(k: str) -> float:
        """How much a cost weighs in the predictions: its base value times its events."""
        return (base_ns[k] or 1e-3) * norms[COST_FIELDS.index(k)]

    # Exactly collinear costs (the scaled matrix has a null space): fix the
    # least influential cost of the null space at its base value, one at a
    # time, so that one missing dimension costs one cost, not the whole group.
    while True:
        fitted = [k for k in COST_FIELDS if not reason[k]]
        cols = [COST_FIELDS.index(k) for k in fitted]
        _, s, vt = np.linalg.svd(aw[:, cols] / norms[cols], full_matrices=True)
        rank = int(np.sum(s > COLLINEAR_RTOL * s[0]))
        if rank == len(fitted):
            break
        null = vt[rank:]
        group = [k for c, k in enumerate(fitted) if np.linalg.norm(null[:, c]) > 1e-6]
        k = min(group, key=influence)
        reason[k] = "collinear with " + ", ".join(o for o in group if o != k)
    while True:
        # Drop the worst-determined cost, one at a time: of two nearly
        # collinear costs only one must go, and the other absorbs their sum.
        fitted = [k for k in COST_FIELDS if not reason[k]]
        costs, stderr = _nnls(aw, bw, fitted, base_ns)
        rel = {k: stderr[k] / max(abs(costs[k]), base_ns[k], 1e-3) for k in fitted}
        poor = [k for k in fitted if rel[k] > max_rel_se]
        if not poor:
            break
        # Fix the poor cost that matters least to the predictions (its base
        # value times its events): an error in its base value hurts least.
        worst = min(poor, key=influence)
        reason[worst] = (
            f"relative standard error {rel[worst]:.0%} > {max_rel_se:.0%}: "
            "too little of its event, or collinear within the noise"
        )
    status = {k: "undetermined" if reason[k] else "fitted" for k in COST_FIELDS}
    predicted = tuple(float(v) for v in a @ np.array([costs[k] for k in COST_FIELDS]))
    return CostFit(costs, status, reason, stderr, tuple(obs), predicted)


def _nnls(
    aw: np.ndarray, bw: np.ndarray, fitted: list[str], base_ns: dict[str, float]
) -> tuple[dict[str, float], dict[str, float]]:
    """NNLS of the ``fitted`` costs; the others are fixed at ``base_ns``."""
    fixed = [k for k in COST_FIELDS if k not in fitted]
    fi = [COST_FIELDS.index(k) for k in fitted]
    xi = [COST_FIELDS.index(k) for k in fixed]
    rhs = bw - aw[:, xi] @ np.array([base_ns[k] for k in fixed]) if xi else bw.copy()
    costs = {k: base_ns[k] for k in fixed}
    stderr = {k: math.nan for k in fixed}
    if not fi:
        return costs, stderr
    x = aw[:, fi]
    norms = np.linalg.norm(x, axis=0)
    sol, _ = nnls(x / norms, rhs, maxiter=50 * len(fi))
    sol = sol / norms
    dof = len(bw) - len(fi)
    sigma2 = float(np.sum((x @ sol - rhs) ** 2) / dof) if dof > 0 else math.inf
    cov = sigma2 * np.linalg.pinv(x.T @ x)
    for j, k in enumerate(fitted):
        costs[k] = float(sol[j])
        stderr[k] = float(math.sqrt(max(cov[j, j], 0.0)))
    return costs, stderr


def calibrate(
    measurements: list[Measurement],
    base: CostModel,
    engine: str = _DEFAULT_ENGINE,
    max_rel_se: float = DEFAULT_MAX_REL_SE,
) -> tuple[CostFit, int]:
    """Fit, re-simulate under the fit, refit until the counts are stable.

    Returns the fit and the number of rounds it took.
    """
    model, previous, rounds = base, None, 0
    while rounds < MAX_ITERATIONS:
        rounds += 1
        obs = observations(measurements, model, engine)
        counts = [o.counts for o in obs]
        fit = fit_costs(obs, base, max_rel_se)
        if counts == previous:
            break
        previous = counts
        model = model_with(fit.costs)
    return fit, rounds


# ---------------------------------------------------------------- output


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


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zapsweep-calibrate",
        description="Fit a zapsweep cost model to measured root zaps (CSV or Parquet).",
    )
    p.add_argument("measurements", help="CSV/Parquet file, or a directory of Parquet files")
    p.add_argument("--name", help="name of the new cost model (default: calibrated-<file stem>)")
    p.add_argument("--out", help="directory to write <name>.yaml (default: conf/cost_model/)")
    p.add_argument("--base", default="seed-2022", help="model for undetermined costs")
    p.add_argument("--engine", default=_DEFAULT_ENGINE, choices=("fast", "reference"))
    p.add_argument(
        "--max-rel-se",
        type=float,
        default=DEFAULT_MAX_REL_SE,
        help="costs fitted with a larger relative standard error are undetermined",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing model")
    return p


def run(args: argparse.Namespace) -> Path:
    source = args.measurements
    name = args.name or f"calibrated-{Path(source).stem}"
    if not _NAME_RE.match(name):
        raise CalibrationError(f"--name {name!r}: use letters, digits, '.', '_' or '-'")
    try:
        base = load_cost_model(args.base)
    except ScenarioError as e:
        raise CalibrationError(f"--base: {e}") from e
    out_dir = Path(args.out) if args.out else cost_model_dir()
    path = out_dir / f"{name}.yaml"
    version = 1
    if path.exists():
        if not args.force:
            raise CalibrationError(f"{path} exists: choose another --name or pass --force")
        try:
            version = load_cost_model(path).version + 1
        except ScenarioError:
            version = 1
    measurements = parse_measurements(read_table(source), source)
    fit, rounds = calibrate(measurements, base, args.engine, args.max_rel_se)
    text = render_yaml(
        fit,
        name=name,
        version=version,
        source=str(source),
        base=base,
        engine=args.engine,
        rounds=rounds,
        measurements=measurements,
    )
    load_cost_model(yaml.safe_load(text))  # the engine must accept what we write
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(summary(fit, base))
    print(f"wrote {path} (cost_model={name}, version {version})")
    return path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        run(args)
    except CalibrationError as e:
        print(f"zapsweep-calibrate: error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "CalibrationError",
    "CostFit",
    "Measurement",
    "Observation",
    "calibrate",
    "fit_costs",
    "main",
    "observations",
    "parse_measurements",
    "read_table",
    "render_yaml",
]
