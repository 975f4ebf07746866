"""Placing rows into the dataset: one Parquet file per batch and partition.

A file is written whole under ``.staging/``, fsynced, renamed into its
partition of ``results/`` (same filesystem, so the rename is atomic), and the
partition's directory is fsynced after (within DIR_SYNC_S, and at close): a
reader never sees a partial file, and after a crash or a power cut a file is
in ``results/`` whole or not at all.  Page checksums are written, so the
integrity check can tell a flipped bit from a valid value.

``encode`` turns rows into Parquet files in memory, where the rows are made
(a worker); ``ResultWriter.place`` writes, fsyncs and renames them in.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .layout import PARTITION_COLUMNS, RunDir, fsync_dir, new_file_name
from .schema import FILE_SCHEMA

# A file's bytes are fsynced before its rename, so that it is in results/ whole
# or not at all.  The rename itself is made durable by an fsync of its
# directory, done for all partitions at once at most this often (and at close):
# a power cut can lose the last renames, whose cells then run again.
DIR_SYNC_S = 0.5


@dataclass(frozen=True)
class EncodedFile:
    """One partition's rows, encoded as a whole Parquet file, not yet on disk."""

    paging_levels: int
    strategy: str
    rows: int
    data: bytes


def file_metadata(provenance: Mapping[str, Any]) -> dict[str, str]:
    """Parquet key-value metadata: text as is, anything else as sorted JSON."""
    return {
        k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        for k, v in provenance.items()
    }


def partitions(table: pa.Table) -> Iterator[tuple[int, str, pa.Table]]:
    """(paging_levels, strategy, the rows of that partition as FILE_SCHEMA)."""
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


def encode(table: pa.Table, metadata: Mapping[str, str]) -> list[EncodedFile]:
    """``table`` as Parquet files in memory, one per partition, page checksums
    written (so that bit rot is caught).  Runs where the rows are made: a worker
    encodes its own range, and the driver only writes bytes."""
    out = []
    for paging_levels, strategy, part in partitions(table):
        sink = pa.BufferOutputStream()
        pq.write_table(part.replace_schema_metadata(metadata), sink, write_page_checksum=True)
        out.append(
            EncodedFile(paging_levels, strategy, part.num_rows, sink.getvalue().to_pybytes())
        )
    return out


def stage_and_rename(run: RunDir, data: bytes, target: Path) -> Path:
    """Write ``data`` whole under ``.staging/``, fsync it, rename it to
    ``target`` (in its folder of ``results/``).  The rename is made durable
    by an fsync of ``target``'s folder: the caller's (``ResultWriter.sync``)."""
    staged = run.staging / target.name
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:  # a write may be short
            view = view[os.write(fd, view) :]
        os.fsync(fd)  # the bytes are on disk before the name is
    finally:
        os.close(fd)
    os.replace(staged, target)
    return target


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
        self._partitions: set[Path] = set()  # made, and their names made durable
        self._unsynced: set[Path] = set()  # partitions with renames not yet fsynced
        self._synced_at = time.monotonic()

    def write(self, table: pa.Table) -> list[Path]:
        """Write one batch: one file per (paging_levels, strategy) it holds."""
        return self.place(encode(table, self.metadata))

    def place(self, files: Sequence[EncodedFile]) -> list[Path]:
        """Stage each file (write, fsync), rename it into its partition; the
        renames are made durable by ``sync``, at most DIR_SYNC_S later."""
        placed = []
        for f in files:
            target = self.run.partition(f.paging_levels, f.strategy)
            self._ensure_dir(target)
            placed.append(stage_and_rename(self.run, f.data, target / new_file_name()))
            self.rows += f.rows
        self._unsynced.update(p.parent for p in placed)
        if time.monotonic() - self._synced_at >= DIR_SYNC_S:
            self.sync()
        self.files += len(placed)
        return placed

    def sync(self) -> None:
        """Make every rename so far durable: fsync the partitions' directories."""
        for folder in sorted(self._unsynced):
            fsync_dir(folder)
        self._unsynced.clear()
        self._synced_at = time.monotonic()

    def _ensure_dir(self, partition: Path) -> None:
        """Create a partition's folders, their names made durable too."""
        if partition in self._partitions:
            return
        partition.mkdir(parents=True, exist_ok=True)
        fsync_dir(partition.parent)  # paging_levels=<n>/ holds strategy=<s>/
        fsync_dir(self.run.results)  # results/ holds paging_levels=<n>/
        self._partitions.add(partition)

    def close(self) -> None:
        self.sync()
        shutil.rmtree(self.run.staging, ignore_errors=True)
