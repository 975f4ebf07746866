"""The results as a pyarrow dataset, partition columns typed as in the schema."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from .layout import PARTITION_COLUMNS
from .schema import ROW_SCHEMA

PARTITIONING = ds.partitioning(
    pa.schema([ROW_SCHEMA.field(name) for name in PARTITION_COLUMNS]), flavor="hive"
)


def open_dataset(results_dir: str | Path) -> ds.Dataset:
    """The dataset under ``results_dir`` (its ``paging_levels=``/``strategy=`` folders)."""
    return ds.dataset(str(results_dir), format="parquet", partitioning=PARTITIONING)
