"""sweep.run from Python: the same rows as the zapsweep command on the same
grid, the verdicts, the run directory's .hydra/, and the caller's Ray left
running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

import sweep
from sweep.run import ConfigError

ZAPSWEEP = str(Path(sys.executable).with_name("zapsweep"))
OVERRIDES = ["grid.vcpus=[1,64]", "grid.dirty_ratio=[0.5]", "progress.bar=false"]
# What differs between two runs of one grid: the time a cell took, where it ran.
VARYING = ("sim_seconds", "worker")


def comparable(df: pl.DataFrame) -> pl.DataFrame:
    return df.drop(VARYING).sort("cell_id").select(sorted(set(df.columns) - set(VARYING)))


@pytest.mark.slow
def test_sweep_run_returns_the_rows_of_the_command_line_and_leaves_ray_running(ray_local, tmp_path):
    res = sweep.run(grid="smoke", overrides=OVERRIDES, run_dir=tmp_path / "nb")
    assert ray_local.is_initialized()  # the caller's session: reused, not shut down
    assert ray_local.get(ray_local.remote(lambda: 42).remote()) == 42
    assert res.status == "complete" and res.run_dir == tmp_path / "nb"
    assert res.frame.height == res.manifest["counts"]["valid"] > 0
    assert set(res.frame["vcpus"]) == {1, 64}
    assert {"strategy", "under_budget_up_to", "stall_free_up_to"} <= set(res.verdicts.columns)
    assert res.report is not None and res.report["report_html"].exists()
    recorded = yaml.safe_load((tmp_path / "nb" / ".hydra" / "overrides.yaml").read_text())
    assert recorded == ["grid=smoke", *OVERRIDES]
    assert (tmp_path / "nb" / ".hydra" / "config.yaml").exists()

    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYDRA_FULL_ERROR")}
    cli = tmp_path / "cli"
    proc = subprocess.run(
        [ZAPSWEEP, "grid=smoke", *OVERRIDES, "report=false", f"hydra.run.dir={cli}"],
        capture_output=True,
        text=True,
        env=base,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from sweep.report import verdicts
    from sweep.report.summary import open_results

    theirs = open_results(cli).scan().collect()
    assert comparable(res.frame).equals(comparable(theirs))
    assert res.verdicts.equals(verdicts(cli))

    # The run directory is the command line's too: the same command resumes it.
    again = sweep.run(grid="smoke", overrides=OVERRIDES, run_dir=tmp_path / "nb")
    assert again.manifest["counts"]["submitted"] == 0
    assert again.manifest["counts"]["resumed"] == res.frame.height


def test_sweep_run_refuses_what_the_command_line_refuses(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'grid.vcpu'"):
        sweep.run(grid="smoke", overrides=["grid.vcpu=[1]"], run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="max_failures=0 is invalid"):
        sweep.run(grid="smoke", overrides=["max_failures=0"], run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="batch.size=many is invalid: allowed an integer"):
        sweep.run(grid="smoke", overrides=["batch.size=many"], run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="grid=nope"):
        sweep.run(grid="nope", run_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_the_readme_notebook_example_runs(ray_local, tmp_path, monkeypatch):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## From Python (notebooks)\n", 1)[1]
    (block,) = re.findall(r"^```python\n(.*?)^```", section.split("\n## ", 1)[0], re.S | re.M)
    monkeypatch.chdir(tmp_path)  # outputs/<date>/<time> lands here
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    res = scope["res"]
    assert res.run_dir.parts[0] == "outputs" and (tmp_path / res.run_dir / "manifest.json").exists()
    assert res.frame.height > 0 and set(res.frame["vcpus"]) == {1, 64}
    assert ray_local.is_initialized()
