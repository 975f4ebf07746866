"""The results dataset: hive partitions, atomic files, metadata, two readers."""

from __future__ import annotations

import errno
import json
import os
import struct
from pathlib import Path

import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from engine import Scenario, load_cost_model
from sweep.dataset import ResultWriter, RunDir, check_dataset, check_file, open_dataset
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


# Durability: staged, fsynced, renamed, the directory fsynced ---------------------------


def _fd_path(fd: int) -> Path:
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


def test_a_file_is_whole_and_fsynced_in_staging_before_it_is_renamed_in(tmp_path, monkeypatch):
    run = RunDir.at(tmp_path / "run")
    writer = ResultWriter(run, metadata={})
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        path = _fd_path(fd)
        in_results = sorted(p.name for p in run.results.rglob("*.parquet"))
        events.append(("fsync", path, path.is_dir(), in_results))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    placed = writer.write(_batch())
    writer.close()  # the renames' directories fsynced by now
    assert len(placed) == 6
    renames = [e for e in events if e[0] == "replace"]
    assert [dst for _, _, dst in renames] == placed
    for _, src, dst in renames:
        assert src.parent == run.staging and src.name == dst.name
        at = events.index(("replace", src, dst))
        synced = [e for e in events[:at] if e[0] == "fsync" and e[1] == src]
        assert synced, f"{src.name} renamed in before it was fsynced"
        assert dst.name not in synced[0][3], "the file was in results/ before it was whole"
        dir_synced = [e for e in events[at:] if e[0] == "fsync" and e[1] == dst.parent]
        assert dir_synced, f"{dst.parent} not fsynced after the rename"
    for path in placed:
        assert pq.read_table(path).num_rows == 1


def test_a_write_that_fails_midway_leaves_nothing_in_results(tmp_path, monkeypatch):
    run = RunDir.at(tmp_path / "run")
    writer = ResultWriter(run, metadata={})
    writer.write(_batch(seed=0))
    before = sorted(run.results.rglob("*.parquet"))
    real_fsync = os.fsync

    def full_disk(fd):  # the bytes are written, then the disk is full
        if _fd_path(fd).suffix == ".parquet":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        writer.write(_batch(seed=1))
    assert sorted(run.results.rglob("*.parquet")) == before  # no partial file, none whole
    assert check_dataset(run).bad == []


def test_only_the_page_checksum_tells_a_flipped_bit_in_a_value(tmp_path):
    rows = rows_table(
        run_batch([make_cell(Scenario(guest_memory="16MiB", seed=s), SETTINGS) for s in range(4)],
                  SETTINGS, worker="w")
    ).to_pylist()  # fmt: skip
    values = [0.7071067811865476, 0.5772156649015329, 0.6931471805599453, 0.3183098861837907]
    for r, v in zip(rows, values, strict=True):
        r["sim_seconds"] = v  # known values, so their bytes can be found in the file
    run = RunDir.at(tmp_path)
    (path,) = ResultWriter(run, metadata={}).write(rows_table(rows))
    data = bytearray(path.read_bytes())
    where = [data.find(struct.pack("<d", v)) for v in values]
    value, at = next((v, i) for v, i in zip(values, where, strict=True) if i >= 0)
    data[at] ^= 0x01  # the lowest mantissa bit: still a valid, nearby float
    path.write_bytes(bytes(data))

    unverified = pq.read_table(path)["sim_seconds"].to_pylist()  # decodes fine ...
    assert value not in unverified and len(unverified) == 4  # ... to a wrong value
    with pytest.raises(OSError, match="CRC"):
        check_file(path)
    (bad,) = check_dataset(run).bad
    assert bad.path == path and "CRC" in bad.reason
