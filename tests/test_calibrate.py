"""zapsweep-calibrate: round trip from a known cost model, and bad-file errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import yaml

from engine import COST_FIELDS, Scenario, load_cost_model, simulate
from sweep.calibrate import (
    CalibrationError,
    calibrate,
    main,
    parse_measurements,
    read_table,
)

# A "machine" whose costs differ from seed-2022 in every cost but
# removed_table_ns: that one is not determined by total_ns measurements
# (a removed table's 512 entries make its column nearly a sum of the
# spte_clear and nonpresent columns), so it must come from the base model.
TRUTH = {
    "visit_ns": 12,
    "spte_clear_ns": 14,
    "nonpresent_entry_ns": 3,
    "accessed_writeback_ns": 25,
    "dirty_writeback_ns": 35,
    "removed_table_ns": 200,
    "atomic_write_ns": 9,
    "yield_ns": 1800,
    "flush_base_ns": 3000,
    "flush_per_vcpu_ns": 800,
}
# The fit's counts come from this engine: the fast one, which equals the reference
# field by field (tests/test_fast_engine.py) and simulates the round trip's 284
# rows in a fraction of a second, where the reference takes seconds per refit.
ENGINE = "fast"


def _row(**kw) -> dict:
    base = dict(
        paging_levels=4,
        guest_memory="8MiB",
        page_size="4K",
        populated_ratio=1.0,
        accessed_ratio=0.0,
        dirty_ratio=0.0,
        zap_levels="root",
        resched="never",
        mmu_lock="write",
        flush_on_yield=False,
        vcpus=1,
    )
    return {**base, **kw}


def measurement_design() -> list[dict]:
    """Scenarios that put a large share of the time on each cost in turn."""
    rows = []
    for a, d in [(0, 0), (1, 0), (1, 1), (0.5, 0.25), (1, 0.5)]:  # clear, A, D
        for mem in ["4MiB", "8MiB", "16MiB", "32MiB"]:
            rows.append(_row(accessed_ratio=a, dirty_ratio=d, guest_memory=mem))
    for pop in [0.02, 0.1, 0.3, 0.6]:  # visits, non-present entries
        for zl in ["root", "per_level", "two_pass"]:
            rows.append(_row(populated_ratio=pop, zap_levels=zl))
    for pop in [1.0, 0.5, 0.1]:  # atomic writes
        for zl in ["root", "per_level", "two_pass"]:
            rows.append(_row(populated_ratio=pop, zap_levels=zl, mmu_lock="read"))
    for pop in [1.0, 0.3, 0.05]:  # yields
        for zl in ["two_pass", "per_level"]:
            rows.append(_row(populated_ratio=pop, zap_levels=zl, resched="always"))
    for pop in [1.0, 0.5, 0.2]:  # flushes: base and per vCPU
        for v in [1, 1, 4, 16]:
            for zl in ["per_level", "two_pass"]:
                rows.append(
                    _row(
                        populated_ratio=pop,
                        zap_levels=zl,
                        resched="always",
                        flush_on_yield=True,
                        vcpus=v,
                        guest_memory="4MiB",
                    )
                )
    # Four draws of every shape (different population seeds).
    return [dict(r, seed=i + 1000 * rep) for rep in range(4) for i, r in enumerate(rows)]


def measured(rows: list[dict], costs: dict, noise: float, rng_seed: int = 0) -> pl.DataFrame:
    model = load_cost_model({"name": "truth", "costs": costs})
    rng = np.random.default_rng(rng_seed)
    out = []
    for r in rows:
        res = simulate(Scenario(**r), engine=ENGINE, cost_model=model)
        factor = 1 + noise * rng.standard_normal()
        out.append({**r, "total_ns": round(res.total_ns * factor)})
    return pl.DataFrame(out)


def fitted_statuses(text: str) -> dict[str, str]:
    """Each cost's status from the comment line above it in a written model."""
    status, last = {}, ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("# fitted") or s.startswith("# undetermined"):
            last = s[2:].split()[0].rstrip(":")
        elif s.split(":")[0] in COST_FIELDS:
            status[s.split(":")[0]] = last
    return status


@pytest.mark.slow
def test_round_trip_recovers_known_costs_within_5_percent(tmp_path, capsys):
    csv = tmp_path / "machine.csv"
    measured(measurement_design(), TRUTH, noise=0.02).write_csv(csv)
    out = tmp_path / "models"
    rc = main([str(csv), "--name", "machine", "--out", str(out), "--engine", ENGINE])
    assert rc == 0, capsys.readouterr().err
    text = (out / "machine.yaml").read_text()
    fitted = load_cost_model(out / "machine.yaml").as_ns()
    status = fitted_statuses(text)
    assert set(status) == set(COST_FIELDS)
    determined = [k for k in COST_FIELDS if status[k] == "fitted"]
    assert len(determined) >= 9, status
    for k in determined:
        assert fitted[k] == pytest.approx(TRUTH[k], rel=0.05), k
    base = load_cost_model("seed-2022").as_ns()
    for k in set(COST_FIELDS) - set(determined):
        assert fitted[k] == base[k], k
    # The residuals are in the comments and the fit is printed.
    assert "# Residuals per measured value:" in text
    assert "total_ns: 284 rows, rms residual" in text
    printed = capsys.readouterr().out
    assert "rms relative residual" in printed and "wrote" in printed


def test_exact_measurements_fit_exactly_and_name_undetermined_costs():
    # Every row with flush_on_yield has vcpus=8: flush_base_ns and
    # flush_per_vcpu_ns are collinear; no row uses mmu_lock=read: no atomics.
    rows = [
        _row(accessed_ratio=a, dirty_ratio=d, populated_ratio=p, zap_levels=zl, seed=i)
        for i, (a, d, p, zl) in enumerate(
            [
                (0, 0, 1.0, "root"),
                (1, 0, 1.0, "root"),
                (1, 1, 1.0, "root"),
                (1, 0.5, 0.5, "two_pass"),
                (0.5, 0.25, 0.1, "per_level"),
                (0, 0, 0.05, "root"),
                (1, 0.2, 0.3, "per_level"),
            ]
        )
    ]
    rows += [
        _row(resched="always", zap_levels=zl, populated_ratio=p, seed=10 + i)
        for i, (zl, p) in enumerate([("per_level", 1.0), ("two_pass", 0.2)])
    ]
    rows += [
        _row(resched="always", flush_on_yield=True, vcpus=8, zap_levels=zl, seed=20 + i)
        for i, zl in enumerate(["per_level", "two_pass"])
    ]
    seed_costs = load_cost_model("seed-2022").as_ns()
    ms = parse_measurements(measured(rows, seed_costs, noise=0.0))
    fit, _ = calibrate(ms, load_cost_model("seed-2022"), ENGINE)
    assert fit.status["atomic_write_ns"] == "undetermined"
    assert "all counts zero" in fit.reason["atomic_write_ns"]
    # One collinear cost is fixed at its base value (the less influential
    # one: 2000 ns x flushes < 500 ns x 8 vCPUs x flushes); the other absorbs
    # the pair's share and is fitted.
    assert fit.status["flush_base_ns"] == "undetermined"
    assert fit.reason["flush_base_ns"] == "collinear with flush_per_vcpu_ns"
    assert fit.costs["flush_base_ns"] == seed_costs["flush_base_ns"]
    assert fit.status["flush_per_vcpu_ns"] == "fitted"
    for k in ("visit_ns", "spte_clear_ns", "accessed_writeback_ns", "flush_per_vcpu_ns"):
        assert fit.status[k] == "fitted"
        assert fit.costs[k] == pytest.approx(seed_costs[k], rel=1e-3), k
    assert np.max(np.abs(fit.residuals())) < 1e-6


def test_max_op_ns_alone_is_fitted_from_the_worst_operation():
    # Only the worst operation is measured: one subtree removal per row.
    rows = [
        _row(accessed_ratio=a, dirty_ratio=d, populated_ratio=p, guest_memory=m, seed=i)
        for i, (a, d, p, m) in enumerate(
            [
                (0, 0, 1.0, "4MiB"),
                (1, 0, 1.0, "8MiB"),
                (1, 1, 1.0, "4MiB"),
                (0.5, 0.25, 1.0, "8MiB"),
                (0, 0, 0.1, "8MiB"),
                (1, 0.5, 0.3, "4MiB"),
                (0, 0, 0.02, "16MiB"),
                (1, 1, 0.6, "8MiB"),
            ]
        )
    ]
    model = load_cost_model({"name": "truth", "costs": TRUTH})
    table = pl.DataFrame(
        [{**r, "max_op_ns": simulate(Scenario(**r), ENGINE, model).max_op_ns} for r in rows]
    )
    fit, _ = calibrate(parse_measurements(table), load_cost_model("seed-2022"), ENGINE)
    assert {o.observable for o in fit.observations} == {"max_op_ns"}
    for k in ("spte_clear_ns", "accessed_writeback_ns", "dirty_writeback_ns"):
        assert fit.status[k] == "fitted"
        assert fit.costs[k] == pytest.approx(TRUTH[k], rel=0.01), k
    assert fit.status["yield_ns"] == "undetermined"  # a yield is never inside an operation


# ------------------------------------------------------------ bad files


def _write(tmp_path, rows: list[dict], suffix: str = ".csv"):
    path = tmp_path / f"m{suffix}"
    df = pl.DataFrame(rows)
    if suffix == ".csv":
        df.write_csv(path)
    else:
        df.write_parquet(path)
    return path


GOOD = [_row(seed=i, total_ns=1_000_000 + i) for i in range(3)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{k: v for k, v in r.items() if k != "total_ns"} for r in GOOD], "'total_ns' and/or"),
        ([{k: v for k, v in r.items() if k != "guest_memory"} for r in GOOD], "guest_memory"),
        ([{k: v for k, v in r.items() if k != "zap_levels"} for r in GOOD], "zap_levels"),
        ([GOOD[0], dict(GOOD[1], total_ns=-5), GOOD[2]], "row 2: negative time total_ns=-5"),
        ([GOOD[0], GOOD[1], dict(GOOD[2], page_size="3K")], "row 3: unknown scenario value"),
        ([GOOD[0], dict(GOOD[1], resched="sometimes")], "resched='sometimes'"),
        ([dict(GOOD[0], total_ns="fast")], "must hold numbers"),
    ],
)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_bad_measurement_files_are_named(tmp_path, capsys, rows, message, suffix):
    path = _write(tmp_path, rows, suffix)
    rc = main([str(path), "--out", str(tmp_path / "out"), "--engine", ENGINE])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("zapsweep-calibrate: error: ")
    assert message in err
    assert not (tmp_path / "out").exists()


def test_too_few_rows_to_determine_the_costs(tmp_path, capsys):
    path = _write(tmp_path, GOOD[:2])
    rc = main([str(path), "--out", str(tmp_path), "--engine", ENGINE])
    err = capsys.readouterr().err
    assert rc == 2
    assert "too few rows: 2 measured value(s) cannot determine" in err


def test_unknown_file_format_and_missing_file(tmp_path):
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(CalibrationError, match="unknown format '.json'"):
        read_table(tmp_path / "m.json")
    with pytest.raises(CalibrationError, match="no such file"):
        read_table(tmp_path / "absent.csv")


def test_existing_model_is_not_overwritten_without_force(tmp_path, capsys):
    path = _write(tmp_path, GOOD)
    (tmp_path / "seedlike.yaml").write_text(yaml.safe_dump({"name": "x"}))
    rc = main([str(path), "--name", "seedlike", "--out", str(tmp_path)])
    assert rc == 2
    assert "exists: choose another --name or pass --force" in capsys.readouterr().err
