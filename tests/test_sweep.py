"""The sweep end to end on the session's local Ray: every cell once, resume, manifest."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hydra import compose, initialize_config_module

from sweep.dataset import open_dataset
from sweep.run.cli import sweep
from sweep.run.runner import auto_batch_size

SMOKE = ["grid=smoke", "engine=reference", "report=false", "progress.bar=false"]


def _cfg(*overrides):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*SMOKE, *overrides])


def _rows(run_dir):
    return open_dataset(run_dir / "results").to_table().to_pylist()


@pytest.fixture(scope="module")
def smoke_run(ray_local, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke")
    return run_dir, sweep(_cfg(), run_dir)


def test_smoke_sweep_writes_every_valid_cell_once(smoke_run, ray_local):
    run_dir, manifest = smoke_run
    counts = manifest["counts"]
    rows = _rows(run_dir)
    ids = [r["cell_id"] for r in rows]
    assert len(ids) == len(set(ids)) == counts["valid"] == counts["ok"] > 0
    assert counts["combinations"] == counts["valid"] + counts["invalid"] + counts["excluded"]
    assert counts["invalid_by_field"] == {"zap_levels": counts["invalid"]}
    assert all(r["status"] == "ok" for r in rows)
    assert {r["worker"] for r in rows} == {ray_local.get_runtime_context().get_node_id()}
    assert {r["strategy"] for r in rows} == {
        "root",
        "two_pass",
        "per_level",
        "upstream",
        "512G,root",
    }
    polars = pl.scan_parquet(run_dir / "results" / "**" / "*.parquet", hive_partitioning=True)
    assert polars.select(pl.len()).collect().item() == len(rows)


def test_manifest_records_grid_counts_versions_and_timings(smoke_run):
    run_dir, manifest = smoke_run
    on_disk = json.loads((run_dir / "manifest.json").read_text())
    assert on_disk["status"] == "complete"
    assert on_disk["grid"]["zap_levels"][0] == "root"
    assert on_disk["counts"]["rows_in_dataset"] == manifest["counts"]["valid"]
    assert on_disk["engine"] == "reference" and on_disk["cost_model"]["name"] == "seed-2022"
    assert on_disk["versions"]["ray"] and on_disk["timings"]["first_result_s"] > 0


def test_rerun_into_the_same_directory_runs_only_new_cells(smoke_run, tmp_path):
    run_dir, first = smoke_run
    again = sweep(_cfg(), run_dir)
    assert again["counts"]["submitted"] == 0
    assert again["counts"]["resumed"] == first["counts"]["valid"]
    grown = sweep(_cfg("grid.seed=[0,1]"), run_dir)  # twice the cells, half of them done
    assert grown["counts"]["resumed"] == first["counts"]["valid"]
    assert grown["counts"]["submitted"] == first["counts"]["valid"]
    ids = [r["cell_id"] for r in _rows(run_dir)]
    assert len(ids) == len(set(ids)) == 2 * first["counts"]["valid"]
    assert len(grown["previous_runs"]) == 2


def test_duplicate_cells_in_one_grid_run_once(ray_local, tmp_path):
    cfg = _cfg(
        "grid.paging_levels=[4]",
        "grid.zap_levels=[per_level,upstream,'4K,2M,1G,root']",  # one list, three spellings
        "grid.guest_memory=[16MiB,16384KiB]",
        "grid.exclude=[]",
    )
    manifest = sweep(cfg, tmp_path)
    counts = manifest["counts"]
    assert counts["valid"] == 2 * 3 * 2 * 2  # page_size x zap spellings x memory x dirty
    assert counts["submitted"] == 2 * 2 and counts["duplicates"] == counts["valid"] - 4
    assert len(_rows(tmp_path)) == 4


def test_an_unknown_engine_fails_before_anything_runs(tmp_path):
    from engine import ScenarioError

    with pytest.raises(ScenarioError) as err:
        sweep(_cfg("engine=warp"), tmp_path)
    assert err.value.field == "engine"
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("expected", "cpus", "size"),
    [(None, 2, 256), (40, 2, 5), (10**5, 2, 256), (3, 4, 1), (630, 2, 79)],
)
def test_auto_batch_size(expected, cpus, size):
    assert auto_batch_size(expected, cpus) == size


def test_local_ray_is_on_loopback(ray_local):
    (node,) = ray_local.nodes()
    assert node["NodeManagerAddress"] == "127.0.0.1"
    assert ray_local.get_runtime_context().gcs_address.startswith("127.0.0.1:")


def test_a_batch_lost_for_good_becomes_error_rows():
    from engine import Scenario, load_cost_model
    from sweep.dataset.schema import ROW_SCHEMA
    from sweep.run.cells import RunSettings, error_table, make_cell

    settings = RunSettings("fast", load_cost_model("seed-2022"))
    cells = [make_cell(Scenario(seed=s), settings) for s in (0, 1)]
    table = error_table(cells, settings, "WorkerCrashedError: node died")
    assert table.schema == ROW_SCHEMA
    rows = table.to_pylist()
    assert [r["cell_id"] for r in rows] == [c.cell_id for c in cells]
    assert {r["status"] for r in rows} == {"error"}
    assert rows[0]["error"] == "WorkerCrashedError: node died" and rows[0]["visits"] is None
