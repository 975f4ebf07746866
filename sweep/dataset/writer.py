"""The results dataset: hive-partitioned Parquet, one file per batch and partition.

Each file is written under ``<run_dir>/.staging/`` and renamed into
``results/paging_levels=<n>/strategy=<s>/`` (same filesystem, so the rename
is atomic): a reader never sees a partial file, and a driver killed at any
moment leaves only whole batches behind.  Provenance goes into every file's
key-value metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .schema import FILE_SCHEMA, PARTITION_COLUMNS

STAGING = ".staging"
PARTITIONING = ds.partitioning(
    pa.schema([pa.field("paging_levels", pa.int64()), pa.field("strategy", pa.string())]),
    flavor="hive",
)


def open_dataset(results_dir: str | Path) -> ds.Dataset:
    """The results as a pyarrow dataset (partition columns typed as in the schema)."""
    return ds.dataset(str(results_dir), format="parquet", partitioning=PARTITIONING)


def done_cell_ids(results_dir: str | Path) -> set[str]:
    """Ids of the cells already in ``results_dir`` (empty if there is none)."""
    path = Path(results_dir)
    if not path.is_dir() or not any(path.rglob("*.parquet")):
        return set()
    return set(open_dataset(path).to_table(columns=["cell_id"]).column("cell_id").to_pylist())


class ResultWriter:
    """Places batches of rows into the dataset as they arrive."""

    def __init__(self, results_dir: str | Path, metadata: Mapping[str, Any]):
        self.results_dir = Path(results_dir)
        self.staging = self.results_dir.parent / STAGING
        shutil.rmtree(self.staging, ignore_errors=True)  # leftovers of a killed driver
        self.staging.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.metadata = {
            k: v if isinstance(v, str) else json.dumps(v, sort_keys=True)
            for k, v in metadata.items()
        }
        self.files = 0
        self.rows = 0

    def write(self, table: pa.Table) -> list[Path]:
        """Write one batch: one file per (paging_levels, strategy) it holds."""
        placed = []
        keys = table.select(list(PARTITION_COLUMNS)).group_by(list(PARTITION_COLUMNS)).aggregate([])
        name = f"part-{uuid.uuid4().hex}.parquet"
        for paging_levels, strategy in zip(*keys.to_pydict().values(), strict=True):
            mask = pc.and_(
                pc.equal(table["paging_levels"], paging_levels),
                pc.equal(table["strategy"], strategy),
            )
            part = table.filter(mask).select(FILE_SCHEMA.names).cast(FILE_SCHEMA)
            part = part.replace_schema_metadata(self.metadata)
            target_dir = (
                self.results_dir / f"paging_levels={paging_levels}" / f"strategy={strategy}"
            )
            target_dir.mkdir(parents=True, exist_ok=True)
            staged = self.staging / name
            pq.write_table(part, staged, write_page_checksum=True)  # bit rot is caught
            os.replace(staged, target_dir / name)
            placed.append(target_dir / name)
            self.rows += part.num_rows
        self.files += len(placed)
        return placed

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
