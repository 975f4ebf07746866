"""The results dataset: hive partitions, atomic files, metadata, two readers."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine import Scenario, load_cost_model
from sweep.dataset import ResultWriter, RunDir, check_dataset, open_dataset
from sweep.dataset.layout import STAGING
from sweep.dataset.schema import FILE_SCHEMA, ROW_SCHEMA, rows_table
from sweep.run.cells import RunSettings, make_cell, run_batch

SETTINGS = RunSettings(engine="reference", cost_model=load_cost_model("seed-2022"))


def _batch(**fields):
    scenarios = [
        Scenario(paging_levels=p, guest_memory="16MiB", zap_levels=z, **fields)
        for p in (4, 5)
        for z in ("root", "two_pass", "2M,root")
    ]
    return rows_table(run_batch([make_cell(s, SETTINGS) for s in scenarios], SETTINGS, worker="w"))


def test_batches_land_in_hive_partitions_and_read_back_identically(tmp_path):
    results = tmp_path / "run" / "results"
    writer = ResultWriter(
        RunDir(results.parent, results),
        metadata={"zapsweep.engine": "reference", "grid": {"a": 1}},
    )
    first = writer.write(_batch(seed=0))
    writer.write(_batch(seed=1))
    writer.close()

    assert len(first) == 6  # one file per (paging_levels, strategy) of the batch
    assert {p.parent.relative_to(results).as_posix() for p in first} == {
        f"paging_levels={p}/strategy={s}" for p in (4, 5) for s in ("root", "two_pass", "2M,root")
    }
    assert not (tmp_path / "run" / STAGING).exists()

    arrow = open_dataset(results).to_table()
    assert arrow.num_rows == 12 and writer.rows == 12
    assert set(arrow.schema.names) == set(ROW_SCHEMA.names)
    hive = ds.dataset(results, format="parquet", partitioning="hive").to_table()
    polars = pl.scan_parquet(results / "**" / "*.parquet", hive_partitioning=True).collect()
    assert hive.num_rows == polars.height == 12
    got = polars.select("cell_id", "paging_levels", "strategy", "zap_levels").sort("cell_id")
    assert got.rows() == sorted(
        zip(*(arrow[c].to_pylist() for c in got.columns), strict=True)
    )  # partition values decode to the same text in both readers, commas included
    assert set(polars["strategy"]) == {"root", "two_pass", "2M,root"}


def test_files_hold_the_file_schema_and_provenance_metadata(tmp_path):
    writer = ResultWriter(RunDir.at(tmp_path), metadata={"zapsweep.cost_model": {"v": 2}})
    (path, *_) = writer.write(_batch())
    parquet = pq.ParquetFile(path)
    assert parquet.schema_arrow.remove_metadata() == FILE_SCHEMA
    meta = parquet.schema_arrow.metadata
    assert json.loads(meta[b"zapsweep.cost_model"]) == {"v": 2}


def test_done_cell_ids_reads_what_was_written(tmp_path):
    run = RunDir.at(tmp_path)
    assert check_dataset(run).cell_ids == set()
    table = _batch()
    ResultWriter(run, metadata={}).write(table)
    assert check_dataset(run).cell_ids == set(table["cell_id"].to_pylist())


def test_a_new_writer_clears_staging_leftovers(tmp_path):
    staging = tmp_path / STAGING
    staging.mkdir()
    (staging / "part-half-written.parquet").write_bytes(b"PAR1 truncated")
    ResultWriter(RunDir.at(tmp_path), metadata={})
    assert not any(staging.iterdir())
