"""Fitting a cost model's per-event costs to measured root zaps.

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

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from engine import COST_FIELDS, DEFAULT_ENGINE, CostModel, event_counts, load_cost_model, simulate

from .measurements import CalibrationError, Measurement

MAX_ITERATIONS = 5
DEFAULT_MAX_REL_SE = 0.2
# Singular values below this fraction of the largest (columns scaled to unit
# norm) mark exactly collinear costs.
COLLINEAR_RTOL = 1e-9


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
    engine: str = DEFAULT_ENGINE,
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
