"""retry=errors and max_failures on real failures (cells that raise in Ray
workers, tests/failing_cells.py): the retry ends with each cell once, the new
row, and the superseded rows kept under the run directory; max_failures=1
stops after the first failed cell with what was written intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from engine import Scenario, load_cost_model
from sweep.dataset import (
    ResultWriter,
    RunDir,
    check_dataset,
    failed_rows,
    finish_superseding,
    open_dataset,
    supersede,
)
from sweep.dataset.schema import rows_table
from sweep.run.cells import RunSettings, error_table, make_cell, run_batch

HERE = Path(__file__).parent
ZAPSWEEP = str(Path(sys.executable).with_name("zapsweep"))


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYDRA_FULL_ERROR")}


def rows(run_dir: Path) -> pl.DataFrame:
    return pl.from_arrow(open_dataset(run_dir / "results").to_table())


@pytest.fixture(scope="module")
def failed_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("failing")
    retry_run, stop_run = tmp / "retry", tmp / "stop"
    proc = subprocess.run(
        [sys.executable, str(HERE / "failing_cells.py"), str(tmp / "seeds"), retry_run, stop_run],
        capture_output=True,
        text=True,
        env=env(),
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr  # Hydra's job log goes to stdout
    return json.loads(proc.stdout.strip().splitlines()[-1]), log, retry_run, stop_run


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_retry_errors_reruns_the_failures_and_keeps_what_they_replace(failed_runs):
    out, _, run_dir, _ = failed_runs
    before = out["retry_run"]["rows"]
    failed = {r["cell_id"] for r in before if r["status"] == "error"}
    assert len(before) == 6 and len(failed) == 2  # the seed-1 cells raised in their workers
    assert all("injected failure" in r["error"] for r in before if r["status"] == "error")
    assert out["ray_still_up"]  # sweep.run left the caller's Ray running

    proc = subprocess.run(
        [ZAPSWEEP, "retry=errors", f"hydra.run.dir={run_dir}"],  # the run's own overrides
        capture_output=True,
        text=True,
        env=env(),
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = rows(run_dir)
    assert after.height == after["cell_id"].n_unique() == 6  # each cell once
    assert set(after["cell_id"]) == {r["cell_id"] for r in before}
    assert set(after["status"]) == {"ok"}  # the new rows of the failed cells
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["retry"]["cells"] == 2 and manifest["counts"]["submitted"] == 2
    assert manifest["counts"]["resumed"] == 0  # only the failed cells were the grid

    # The superseded rows are kept, under the run directory, beside results/.
    run = RunDir.at(run_dir)
    kept = [pq.read_table(s["moved_to"]) for s in manifest["retry"]["superseded"]]
    old = pl.concat([pl.from_arrow(t) for t in kept])
    assert set(old.filter(pl.col("status") == "error")["cell_id"]) == failed
    assert all(Path(s["moved_to"]).is_relative_to(run.superseded) for s in
               manifest["retry"]["superseded"])  # fmt: skip
    notes = [Path(s["moved_to"] + ".why").read_text() for s in manifest["retry"]["superseded"]]
    assert all("superseded by retry=errors" in n for n in notes)

    # The integrity check and the report see each cell once.
    scan = check_dataset(run)
    assert scan.rows == 6 and scan.duplicates == 0 and not scan.bad
    from sweep.report import summarize

    summary = summarize(run_dir, ["strategy"])
    assert summary["cells"].sum() == 6 and summary["errors"].sum() == 0

    # Nothing left to retry: a second retry runs nothing and changes nothing.
    again = subprocess.run(
        [ZAPSWEEP, "retry=errors", f"hydra.run.dir={run_dir}", "report=false"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=280,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert rows(run_dir).sort("cell_id").equals(after.sort("cell_id"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_max_failures_stops_after_the_first_failed_cell(failed_runs):
    out, log, _, run_dir = failed_runs
    assert out["stop_exit"] == 3
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "stopped"
    assert "max_failures=1" in manifest["stopped_because"]
    assert manifest["counts"]["failed"] == 1 and manifest["counts"]["valid"] < 6
    got = rows(run_dir)
    # In grid order: the seed-0 cell, then the first seed-1 cell, which failed.
    assert got["status"].to_list().count("error") == 1 and got.height == 2
    scan = check_dataset(RunDir.at(run_dir))
    assert scan.rows == 2 and not scan.bad  # everything written so far is whole
    assert "stopped: 1 cell failed (max_failures=1)" in log and "retry=errors" in log


SETTINGS = RunSettings("fast", load_cost_model("seed-2022"))


def mixed_file(run: RunDir) -> tuple[list, list]:
    """One result file: two ok cells and two error cells (a lost range)."""
    ok = [make_cell(Scenario(guest_memory="16MiB", seed=s), SETTINGS) for s in (0, 1)]
    bad = [make_cell(Scenario(guest_memory="16MiB", seed=s), SETTINGS) for s in (2, 3)]
    table = rows_table(
        run_batch(ok, SETTINGS) + error_table(bad, SETTINGS, "WorkerCrashedError").to_pylist()
    )
    writer = ResultWriter(run, {"zapsweep.engine": "fast"})
    writer.write(table)
    writer.close()
    return ok, bad


def test_a_retry_stopped_between_its_two_steps_is_finished_by_the_next_sweep(tmp_path, monkeypatch):
    from sweep.dataset import superseding as module

    run = RunDir.at(tmp_path / "run")
    ok, bad = mixed_file(run)
    files, failed = failed_rows(run)
    assert len(files) == 1 and sorted(failed["cell_id"].to_pylist()) == sorted(
        c.cell_id for c in bad
    )

    def power_cut(*args):
        raise OSError("power cut")

    monkeypatch.setattr(module, "set_aside", power_cut)
    with pytest.raises(OSError):
        supersede(run, files)  # the kept rows are written, the file is not moved yet
    assert check_dataset(run).duplicates == 2
    monkeypatch.undo()

    (done,) = finish_superseding(run)
    scan = check_dataset(run)
    assert scan.rows == 2 and scan.duplicates == 0  # the ok cells once, the failed gone
    assert done.errors == 2 and done.moved_to.exists() and done.kept.exists()
    assert finish_superseding(run) == []  # nothing left half done


@pytest.mark.parametrize(
    "fields",
    [
        {"guest_memory": "64MiB", "zap_levels": "2M,root"},
        {"guest_memory": "8GiB", "page_size": "1G", "layout": "q35", "split_ratio": 0.25},
        {"memslots": [{"gpa": 0, "size": "16MiB"}, {"gpa": "4GiB", "size": "2MiB",
                       "page_size": "2M", "dirty_ratio": 0.0}]},
    ],
)  # fmt: skip
def test_a_row_rebuilds_its_scenario_and_its_cell_id(fields):
    from sweep.dataset import scenario_from_columns
    from sweep.dataset.schema import scenario_columns

    scenario = Scenario(**fields)
    row = {"name": "vm-7", **scenario_columns(scenario)}
    rebuilt = scenario_from_columns(row)
    assert rebuilt == scenario
    assert make_cell(rebuilt, SETTINGS, "vm-7") == make_cell(scenario, SETTINGS, "vm-7")
