"""Checking the results dataset file by file, and moving bad files aside.

``check_dataset`` only reads: every file in full, Parquet page checksums
included.  A file that does not read back as Parquet of the result schema
(truncated, corrupted, zero bytes, written by something else) is reported
as bad, with the reason.  Readers (the report) skip bad files and say so;
the sweep ``quarantine``s them, moving each to ``quarantine/`` under its path
inside ``results/`` with a note of why, so that its cells are missing from
the dataset and run again.  Nothing is deleted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .layout import RunDir, fsync_dir

# What makes a file a results file; other columns may come and go with the schema.
REQUIRED = ("cell_id", "status")
CELL_ID_DIGITS = 16
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i


@dataclass(frozen=True)
class BadFile:
    path: Path  # where it is (or was), inside results/
    reason: str
    moved_to: Path | None = None  # set once quarantined


@dataclass
class Scan:
    """What a check of the dataset found."""

    files: int = 0
    rows: int = 0
    bad: list[BadFile] = field(default_factory=list)
    _ids: list[pa.Array] = field(default_factory=list, repr=False)

    def keys(self) -> np.ndarray:
        """The cell ids of the good files as sorted, unique uint64 keys (``cell_keys``)."""
        if not self._ids:
            return np.empty(0, dtype=np.uint64)
        return np.unique(np.concatenate([cell_keys(ids) for ids in self._ids]))

    @property
    def cell_ids(self) -> set[str]:
        """The cell ids of the good files, as text."""
        return {x for ids in self._ids for x in ids.to_pylist()}

    @property
    def duplicates(self) -> int:
        """Rows whose cell_id an earlier row already held."""
        return self.rows - len(self.keys())


def cell_keys(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Cell ids (16 hex digits) as uint64 keys, vectorised; ids of another form
    (written by something else) are left out: no cell of a grid has them."""
    ids = pa.concat_arrays(ids.chunks) if isinstance(ids, pa.ChunkedArray) else ids
    ids = ids.filter(pc.equal(pc.utf8_length(ids), CELL_ID_DIGITS))
    if not len(ids):
        return np.empty(0, dtype=np.uint64)
    fixed = pc.cast(ids, pa.binary(CELL_ID_DIGITS))
    raw = np.frombuffer(fixed.buffers()[1], dtype=np.uint8)
    digits = _NIBBLE[raw[fixed.offset * CELL_ID_DIGITS :][: len(ids) * CELL_ID_DIGITS]]
    digits = digits.reshape(-1, CELL_ID_DIGITS).astype(np.uint64)
    valid = (digits != 255).all(axis=1)
    shifts = np.arange(4 * (CELL_ID_DIGITS - 1), -1, -4, dtype=np.uint64)
    return (digits[valid] << shifts).sum(axis=1, dtype=np.uint64)


def check_file(path: Path) -> pa.Table:
    """Read one results file completely; raise if it is not a whole, valid file."""
    table = pq.read_table(path, page_checksum_verification=True)  # every page, its CRC
    missing = [name for name in REQUIRED if name not in table.column_names]
    if missing:
        raise ValueError(f"not a zapsweep results file: missing columns {missing}")
    if table.column("cell_id").null_count:
        raise ValueError("rows without a cell_id")
    return table


def check_dataset(run: RunDir) -> Scan:
    """Read every file of ``run``'s dataset; say which are bad and why. Changes nothing."""
    scan = Scan()
    for path in run.result_files():
        scan.files += 1
        try:
            ids = check_file(path).column("cell_id")
        except (OSError, pa.ArrowException, ValueError) as err:
            scan.bad.append(BadFile(path, f"{type(err).__name__}: {err}"))
            continue
        scan.rows += len(ids)
        scan._ids.append(pa.concat_arrays(ids.chunks) if ids.num_chunks != 1 else ids.chunk(0))
    return scan


def quarantine(run: RunDir, bad: BadFile) -> BadFile:
    """Move a bad file of ``run``'s dataset to ``quarantine/``, with a ``.why`` note."""
    return BadFile(bad.path, bad.reason, set_aside(bad.path, run.quarantined(bad.path), bad.reason))


def set_aside(path: Path, target: Path, why: str) -> Path:
    """Move ``path`` to ``target`` (a new name if taken) with a ``.why`` note
    beside it; the move is made durable.  Returns where it went."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target = target.with_name(f"{target.name}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}")
    os.replace(path, target)
    target.with_name(target.name + ".why").write_text(why + "\n")
    fsync_dir(path.parent)
    fsync_dir(target.parent)
    return target
