"""Superseding error rows: ``retry=errors`` gives a failed cell a new row and
keeps the old one under the run directory.

A result file holding error rows leaves ``results/`` in two steps:

1. its other rows are written to ``<name>-kept.parquet`` beside it (whole,
   under ``.staging/``, fsynced, renamed in), unless all of its rows failed;
2. the file itself is moved to ``superseded/``, under its path inside
   ``results/``, with a ``.why`` note.

So each cell keeps at most one row in ``results/`` (its error row is gone,
its ok rows are in the kept file), the failed cells run again, and nothing
is deleted.  A crash between the two steps leaves a kept file next to the
file it came from; ``finish_superseding`` (run as every sweep starts) completes the move,
so a reader never sees a row twice for longer than that crash lasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .integrity import set_aside
from .layout import RunDir, fsync_dir
from .writer import stage_and_rename


@dataclass(frozen=True)
class Superseded:
    """A result file moved aside so that its failed cells run again."""

    path: Path  # where it was, in results/
    moved_to: Path
    errors: int  # its rows that were errors
    kept: Path | None  # the file of its other rows, in results/ (None: every row failed)

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "moved_to": str(self.moved_to),
            "error_rows": self.errors,
            "kept_rows_in": None if self.kept is None else str(self.kept),
        }


def failed(table: pa.Table) -> pa.Array:
    """Which rows of a result file are not results (``status`` is not "ok")."""
    return pc.invert(pc.fill_null(pc.equal(table["status"], "ok"), False))


def failed_rows(run: RunDir, files: list[Path] | None = None) -> tuple[list[Path], pa.Table | None]:
    """The files of the dataset that hold error rows, and those rows (as the
    files hold them, FILE_SCHEMA, with ``paging_levels`` and ``strategy``
    from their folders)."""
    found, parts = [], []
    for path in run.result_files() if files is None else files:
        table = pq.read_table(path)
        mask = failed(table)
        if not pc.any(mask).as_py():
            continue
        found.append(path)
        rows = table.filter(mask)
        for column, value in partition_values(run, path).items():
            if column not in rows.column_names:
                rows = rows.append_column(column, pa.array([value] * rows.num_rows))
        parts.append(rows.replace_schema_metadata(None))
    if not parts:
        return found, None
    return found, pa.concat_tables(parts, promote_options="default")


def partition_values(run: RunDir, path: Path) -> dict:
    """The hive partition values a file's folders name (``paging_levels=5``)."""
    out: dict = {}
    for part in path.parent.relative_to(run.results).parts:
        key, sep, value = part.partition("=")
        if sep:
            out[key] = int(value) if value.isdigit() else value
    return out


def supersede(run: RunDir, files: list[Path]) -> list[Superseded]:
    """Move ``files`` (holding error rows) out of results/, their other rows
    kept in results/."""
    when = datetime.now(UTC).isoformat(timespec="seconds")
    run.staging.mkdir(parents=True, exist_ok=True)
    out = []
    for path in files:
        table = pq.read_table(path)
        mask = failed(table)
        errors = pc.sum(mask.cast(pa.int64())).as_py() or 0
        kept = None
        if errors < table.num_rows:
            kept = RunDir.kept_rows(path)
            if not kept.exists():  # written by a sweep that stopped before the move
                sink = pa.BufferOutputStream()
                pq.write_table(table.filter(pc.invert(mask)), sink, write_page_checksum=True)
                stage_and_rename(run, sink.getvalue().to_pybytes(), kept)
                fsync_dir(kept.parent)
        why = (
            f"{errors} error row(s) superseded by retry=errors at {when}; their cells ran "
            "again into results/"
            + ("" if kept is None else f"; the file's other rows are in {kept}")
        )
        out.append(Superseded(path, set_aside(path, run.superseded_file(path), why), errors, kept))
    return out


def finish_superseding(run: RunDir) -> list[Superseded]:
    """Complete what a stopped retry left half done: a file whose kept rows
    are already in results/ is moved aside."""
    sources = []
    for path in run.result_files():
        source = RunDir.kept_from(path)
        if source is not None and source.exists():
            sources.append(source)
    return supersede(run, sources) if sources else []


__all__ = ["Superseded", "failed_rows", "finish_superseding", "supersede"]
