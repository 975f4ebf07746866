"""Placing rows into the dataset: one Parquet file per batch and partition.

A file is written whole under ``.staging/``, fsynced, renamed into its
partition of ``results/`` (same filesystem, so the rename is atomic), and the
partition's directory is fsynced after: a reader never sees a partial file,
and after a crash or a power cut a file is in ``results/`` whole or not at
all.  Page checksums are written, so the integrity check can tell a flipped
bit from a valid value.

``stage`` is the first half (write and fsync), usable where the rows are made;
``ResultWriter.place`` the second (rename and fsync the directory).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .layout import PARTITION_COLUMNS, RunDir, fsync_dir, new_file_name
from .schema import FILE_SCHEMA


@dataclass(frozen=True)
class StagedFile:
    """A whole, fsynced file in ``.staging/``, waiting for its partition."""

    name: str
    paging_levels: int
    strategy: str
    rows: int


def file_metadata(provenance: Mapping[str, Any]) -> dict[str, str]:
    """Parquet key-value metadata: text as is, anything else as sorted JSON."""
    return {
        k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        for k, v in provenance.items()
    }


def partitions(rows: pa.Table | pa.RecordBatch) -> Iterator[tuple[int, str, pa.Table]]:
    """(paging_levels, strategy, the rows of that partition as FILE_SCHEMA)."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
    keys = table.select(list(PARTITION_COLUMNS)).group_by(list(PARTITION_COLUMNS)).aggregate([])
    for paging_levels, strategy in zip(*keys.to_pydict().values(), strict=True):
        part = table
        if keys.num_rows > 1:
            mask = pc.and_(
                pc.equal(table["paging_levels"], paging_levels),
                pc.equal(table["strategy"], strategy),
            )
            part = table.filter(mask)
        yield paging_levels, strategy, part.select(FILE_SCHEMA.names).cast(FILE_SCHEMA)


def _write_synced(table: pa.Table, path: Path) -> None:
    with path.open("wb") as f:
        pq.write_table(table, f, write_page_checksum=True)  # bit rot is caught
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the name is


def stage(
    rows: pa.Table | pa.RecordBatch, staging: Path, metadata: Mapping[str, str]
) -> list[StagedFile]:
    """Write ``rows`` under ``staging``, one fsynced file per partition."""
    staged = []
    for paging_levels, strategy, part in partitions(rows):
        name = new_file_name()
        _write_synced(part.replace_schema_metadata(metadata), staging / name)
        staged.append(StagedFile(name, paging_levels, strategy, part.num_rows))
    return staged


class ResultWriter:
    """Places batches of rows into the dataset of ``run`` as they arrive."""

    def __init__(self, run: RunDir, metadata: Mapping[str, Any]):
        self.run = run
        shutil.rmtree(run.staging, ignore_errors=True)  # leftovers of a killed driver
        run.staging.mkdir(parents=True, exist_ok=True)
        run.results.mkdir(parents=True, exist_ok=True)
        self.metadata = file_metadata(metadata)
        self.files = 0
        self.rows = 0

    def write(self, rows: pa.Table | pa.RecordBatch) -> list[Path]:
        """Write one batch: one file per (paging_levels, strategy) it holds."""
        return self.place(stage(rows, self.run.staging, self.metadata))

    def place(self, staged: Sequence[StagedFile]) -> list[Path]:
        """Rename staged files into their partitions, then make the renames durable."""
        placed = []
        for f in staged:
            target = self.run.partition(f.paging_levels, f.strategy)
            self._ensure_dir(target)
            os.replace(self.run.staging / f.name, target / f.name)
            placed.append(target / f.name)
            self.rows += f.rows
        for folder in {p.parent for p in placed}:
            fsync_dir(folder)
        self.files += len(placed)
        return placed

    def _ensure_dir(self, partition: Path) -> None:
        """Create a partition's folders, their names made durable too."""
        if partition.is_dir():
            return
        partition.mkdir(parents=True, exist_ok=True)
        fsync_dir(partition.parent)  # paging_levels=<n>/ holds strategy=<s>/
        fsync_dir(self.run.results)  # results/ holds paging_levels=<n>/

    def close(self) -> None:
        shutil.rmtree(self.run.staging, ignore_errors=True)
