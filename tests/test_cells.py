"""Cell ids and batches: stable hashing, error rows that never fail a batch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import sweep.run.cells as cells_mod
from engine import RESULT_FIELDS, SCENARIO_FIELDS, Scenario, load_cost_model, simulate
from sweep.dataset.schema import ROW_SCHEMA, rows_table
from sweep.run.cells import Cell, RunSettings, cell_id, make_cell, run_batch, run_cell

GOLDEN_COSTS = {
    "name": "golden",
    "version": 3,
    "costs": {
        "visit_ns": 15,
        "spte_clear_ns": 10,
        "nonpresent_entry_ns": 2,
        "accessed_writeback_ns": 30,
        "dirty_writeback_ns": 20,
        "removed_table_ns": 200,
        "atomic_write_ns": 5,
        "yield_ns": 2000,
        "flush_base_ns": 2000,
        "flush_per_vcpu_ns": 500,
    },
}
SETTINGS = RunSettings(engine="reference", cost_model=load_cost_model(GOLDEN_COSTS))
SCENARIO = Scenario(guest_memory="16MiB", zap_levels="two_pass", dirty_ratio=0.5, vcpus=8)
# Recorded once per ENGINE_VERSION: a change here means every existing dataset
# would be re-run.  (ENGINE_VERSION 2, with the layout, memslots and
# split_ratio columns; it was a2192273b96c63ab under 1.)
GOLDEN_ID = "252fa6fca39614b5"


def test_cell_id_is_pinned():
    assert cell_id(SCENARIO, SETTINGS) == GOLDEN_ID


def test_cell_id_is_the_same_in_another_process():
    code = (
        "from tests.test_cells import SCENARIO, SETTINGS; from sweep.run.cells import cell_id; "
        "print(cell_id(SCENARIO, SETTINGS))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert out.stdout.strip() == GOLDEN_ID


def test_cell_id_ignores_how_a_value_was_written():
    same = Scenario(
        guest_memory=16 << 20,
        zap_levels=("1G", "root"),
        dirty_ratio=0.5,
        vcpus=8,
        resched_interval_us=1000.0,
        host_phys_bits=46,
    )
    assert cell_id(same, SETTINGS) == GOLDEN_ID


@pytest.mark.parametrize(
    "change",
    [
        {"scenario": {"seed": 1}},
        {"scenario": {"dirty_ratio": 0.25}},
        {"scenario": {"flush_on_yield": True}},
        {"scenario": {"zap_levels": "root"}},
        {"settings": {"engine": "fast"}},
        {"settings": {"engine_version": "999"}},
        {"cost": {"version": 4}},
        {"cost": {"name": "other"}},
        {"cost": {"yield_ps": 1}},
    ],
)
def test_cell_id_changes_with_anything_that_changes_the_result(change):
    scenario = dataclasses.replace(SCENARIO, **change.get("scenario", {}))
    model = dataclasses.replace(SETTINGS.cost_model, **change.get("cost", {}))
    settings = dataclasses.replace(SETTINGS, cost_model=model, **change.get("settings", {}))
    # Against the unchanged settings' id, computed now: a field left out of the
    # hash would change both ids alike, and only this comparison would see it.
    assert cell_id(scenario, settings) != cell_id(SCENARIO, SETTINGS)


def test_description_of_the_cost_model_is_not_part_of_the_id():
    model = dataclasses.replace(SETTINGS.cost_model, description="reworded")
    assert cell_id(SCENARIO, dataclasses.replace(SETTINGS, cost_model=model)) == GOLDEN_ID


def test_batch_rows_carry_scenario_result_and_provenance():
    scenarios = [SCENARIO, Scenario(paging_levels=5, guest_memory="64MiB", page_size="2M")]
    table = rows_table(run_batch([make_cell(s, SETTINGS) for s in scenarios], SETTINGS, "node-a"))
    assert table.schema == ROW_SCHEMA
    rows = table.to_pylist()
    for scenario, row in zip(scenarios, rows, strict=True):
        expected = simulate(scenario, engine="reference", cost_model=SETTINGS.cost_model)
        assert {k: row[k] for k in RESULT_FIELDS} == expected.to_dict()
        assert row["status"] == "ok" and row["error"] is None
        assert row["worker"] == "node-a" and row["engine"] == "reference"
        assert row["cost_model"] == "golden" and row["sim_seconds"] > 0
        assert set(SCENARIO_FIELDS) <= set(row)
    assert rows[0]["zap_levels"] == "1G,root" and rows[0]["strategy"] == "two_pass"
    assert rows[1]["zap_levels"] == "1G,root" and rows[1]["strategy"] == "two_pass"
    assert rows[1]["guest_memory"] == 64 << 20 and rows[1]["host_phys_bits"] == 52


def test_a_raising_cell_becomes_an_error_row_and_the_batch_goes_on(monkeypatch):
    real = cells_mod.simulate

    def flaky(scenario, **kw):
        if scenario.seed == 1:
            raise RuntimeError("boom in the walk")
        return real(scenario, **kw)

    monkeypatch.setattr(cells_mod, "simulate", flaky)
    batch = [make_cell(dataclasses.replace(SCENARIO, seed=s), SETTINGS) for s in (0, 1, 2)]
    rows = run_batch(batch, SETTINGS)
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert rows[1]["error"].startswith("RuntimeError: boom in the walk")
    assert all(rows[1].get(k) is None for k in RESULT_FIELDS)
    assert rows[1]["cell_id"] == batch[1].cell_id and rows[1]["seed"] == 1


def test_an_unknown_engine_is_an_error_row_naming_it():
    settings = dataclasses.replace(SETTINGS, engine="warp")
    table = rows_table(run_batch([Cell("x", SCENARIO)], settings))
    (row,) = table.to_pylist()
    assert row["status"] == "error" and "engine='warp'" in row["error"]
    assert isinstance(table, pa.Table)


def test_memslots_column_is_one_stable_text_and_the_id_ignores_how_slots_were_written():
    slots = [{"gpa": "1GiB", "size": 1 << 30, "page_size": "2M"}, {"gpa": 0, "size": "640KiB"}]
    again = [{"gpa": 0, "size": 655360}, {"gpa": 1 << 30, "size": "1024MiB", "page_size": "2M"}]
    a, b = Scenario(memslots=slots), Scenario(memslots=again)
    assert a == b and cell_id(a, SETTINGS) == cell_id(b, SETTINGS)
    row = run_cell(make_cell(a, SETTINGS), SETTINGS, "test")
    assert row["layout"] == "memslots" and row["status"] == "ok"
    text = row["memslots"]
    assert json.loads(text) == [
        {"gpa": "0", "size": "640KiB", "page_size": "4K", "populated_ratio": 1.0,
         "accessed_ratio": 1.0, "dirty_ratio": 0.5, "split_ratio": 0.0},
        {"gpa": "1GiB", "size": "1GiB", "page_size": "2M", "populated_ratio": 1.0,
         "accessed_ratio": 1.0, "dirty_ratio": 0.5, "split_ratio": 0.0},
    ]  # fmt: skip
    # The text is a slot list the engine (and a grid) accepts as it is.
    assert Scenario(memslots=json.loads(text)) == a
    assert row["leaves_4k"] + row["leaves_2m"] + row["leaves_1g"] == row["leaf_zapped"]
    assert run_cell(make_cell(Scenario(), SETTINGS), SETTINGS, "test")["memslots"] is None
