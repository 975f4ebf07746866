"""The sweep end to end on the session's local Ray: every cell once, resume, manifest."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hydra import compose, initialize_config_module

from sweep.dataset import open_dataset
from sweep.run.cli import sweep

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


KERNEL_AXES = [
    "grid.guest_memory=[16MiB]",
    "grid.page_size=[4K]",
    "grid.dirty_ratio=[0.5]",
    'grid.kernel=["5.15","5.18","6.13",null]',
    "grid.trigger=[memslot,vm_destroy]",
    "grid.zap_levels=[null]",
    "grid.smm_populated_ratio=[0,0.5]",
    "grid.preempt=[voluntary,full]",
    "grid.lock_contention_us=[null,5]",
    "grid.root_zap=[null]",
    "grid.ad_writeback=[null]",
    "grid.flush_on_remove=[null]",
    "grid.exclude=[]",
]


def test_kernel_axes_sweep_and_the_manifest_records_the_presets(ray_local, tmp_path):
    """Every new field is an axis and a column; a preset fills in what the
    grid leaves null; the manifest records each named preset's settings."""
    manifest = sweep(_cfg(*KERNEL_AXES), tmp_path)
    assert manifest["counts"]["ok"] == manifest["counts"]["valid"] == 4 * 2 * 2 * 2 * 2 * 2
    recorded = json.loads((tmp_path / "manifest.json").read_text())["kernels"]
    assert sorted(recorded) == ["5.15", "5.18", "6.13"]
    assert recorded["5.18"]["memslot"] == {
        "mmu_lock": "read",
        "flush_on_yield": False,
        "root_zap": "parallel",
    }
    assert recorded["6.13"]["ad_writeback"] is False
    assert recorded["5.15"]["commits"]["zap_levels"] == ["0103098fb4f1", "524a1e4e381f"]
    df = pl.DataFrame(_rows(tmp_path))
    for column in ("kernel", "trigger", "smm_populated_ratio", "root_zap", "ad_writeback",
                   "preempt", "lock_contention_us", "flush_on_remove", "roots_zapped",
                   "wall_ns"):  # fmt: skip
        assert column in df.columns
    five18 = df.filter((pl.col("kernel") == "5.18") & (pl.col("trigger") == "memslot"))
    assert set(five18["root_zap"]) == {"parallel"} and set(five18["mmu_lock"]) == {"read"}
    two = five18.filter(pl.col("smm_populated_ratio") > 0)
    assert set(two["roots_zapped"]) == {2} and (two["wall_ns"] < two["total_ns"]).all()
    none = df.filter(pl.col("kernel").is_null())
    assert set(none["zap_levels"]) == {"1G,root"} and set(none["mmu_lock"]) == {"write"}
    # 6.13 honours a waiter for mmu_lock only under preempt=full.
    waited = df.filter((pl.col("kernel") == "6.13") & pl.col("lock_contention_us").is_not_null())
    by = dict(waited.group_by("preempt").agg(pl.col("yields").sum()).iter_rows())
    plain = df.filter((pl.col("kernel") == "6.13") & pl.col("lock_contention_us").is_null())
    assert by["full"] > plain["yields"].sum() / 2 and by["voluntary"] == plain["yields"].sum() / 2


def test_an_explicit_field_overrides_the_preset_in_a_grid(ray_local, tmp_path):
    manifest = sweep(
        _cfg(
            "grid.guest_memory=[16MiB]", "grid.page_size=[4K]", "grid.dirty_ratio=[0.5]",
            'grid.kernel=["6.6"]', "grid.zap_levels=[root]", "grid.mmu_lock=[write]",
            "grid.exclude=[]",
        ),
        tmp_path,
    )  # fmt: skip
    assert manifest["counts"]["ok"] == 2  # 4- and 5-level paging
    df = pl.DataFrame(_rows(tmp_path))
    assert set(df["strategy"]) == {"root"} and set(df["mmu_lock"]) == {"write"}
