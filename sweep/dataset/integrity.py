"""Checking the results dataset file by file; bad files are moved aside.

A file that does not read back as Parquet of the result schema (truncated,
corrupted, zero bytes, written by something else) is moved to
``<run_dir>/quarantine/`` under its path inside ``results/``, with a note of
why; the cells it held are then missing from the dataset, so the next sweep
runs them again.  Nothing is deleted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"
# What makes a file a results file; other columns may come and go with the schema.
REQUIRED = ("cell_id", "status")


@dataclass(frozen=True)
class BadFile:
    path: Path  # where it was, inside results/
    moved_to: Path
    reason: str


@dataclass
class Scan:
    """What a check of ``results/`` found."""

    cell_ids: set[str] = field(default_factory=set)
    files: int = 0
    rows: int = 0
    duplicates: int = 0  # rows whose cell_id an earlier file already held
    bad: list[BadFile] = field(default_factory=list)


def check_file(path: Path) -> pa.Table:
    """Read one results file completely; raise if it is not a whole, valid file."""
    table = pq.read_table(path, page_checksum_verification=True)  # every page, its CRC
    missing = [name for name in REQUIRED if name not in table.column_names]
    if missing:
        raise ValueError(f"not a zapsweep results file: missing columns {missing}")
    if table.column("cell_id").null_count:
        raise ValueError("rows without a cell_id")
    return table


def quarantine(path: Path, results_dir: Path, reason: str) -> BadFile:
    """Move ``path`` (inside ``results_dir``) to ``<run_dir>/quarantine/``."""
    target = results_dir.parent / QUARANTINE / path.relative_to(results_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target = target.with_name(f"{target.name}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}")
    os.replace(path, target)
    target.with_name(target.name + ".why").write_text(reason + "\n")
    return BadFile(path, target, reason)


def scan_results(results_dir: str | Path, *, move_bad: bool = True) -> Scan:
    """Read every file of the dataset; quarantine the bad ones (and say which)."""
    results_dir = Path(results_dir)
    scan = Scan()
    if not results_dir.is_dir():
        return scan
    for path in sorted(results_dir.rglob("*.parquet")):
        try:
            ids = check_file(path).column("cell_id").to_pylist()
        except (OSError, pa.ArrowException, ValueError) as err:
            reason = f"{type(err).__name__}: {err}"
            if not move_bad:
                scan.bad.append(BadFile(path, path, reason))
                continue
            bad = quarantine(path, results_dir, reason)
            log.warning(
                "bad results file %s (%s): moved to %s; its cells will run again",
                path,
                reason,
                bad.moved_to,
            )
            scan.bad.append(bad)
            continue
        scan.files += 1
        scan.rows += len(ids)
        before = len(scan.cell_ids)
        scan.cell_ids.update(ids)
        scan.duplicates += len(ids) - (len(scan.cell_ids) - before)
    return scan
