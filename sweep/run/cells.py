"""Cells: a scenario with its id; running cells into rows, and a grid range into a batch.

This is what a worker runs (``sweep.run.task``), kept free of Ray so it can be
tested and benchmarked in one process.  A cell that raises becomes an error
row; it never fails its batch.  A worker imports this module, the engine and
pyarrow's core (``sweep.dataset.schema``), nothing of the driver's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from engine import ENGINE_VERSION, PART_I_VALUES, CostModel, GuestCache, Scenario, simulate
from sweep.dataset.schema import rows_table, scenario_columns

from .grid import Grid, GridCounts


@dataclass(frozen=True)
class RunSettings:
    """What, besides the scenario, decides a cell's result."""

    engine: str
    cost_model: CostModel
    engine_version: str = ENGINE_VERSION

    def identity(self) -> dict[str, Any]:
        model = dataclasses.asdict(self.cost_model)
        model.pop("description", None)
        return {"engine": self.engine, "engine_version": self.engine_version, "cost_model": model}

    @functools.cached_property
    def identity_json(self) -> str:
        """identity() as canonical JSON, worked out once per run, not per cell."""
        return json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))

    def provenance_columns(self) -> dict[str, str]:
        return {
            "engine": self.engine,
            "cost_model": self.cost_model.name,
            "engine_version": self.engine_version,
        }


@dataclass(frozen=True)
class Cell:
    cell_id: str
    scenario: Scenario
    name: str | None = None  # the VM's name, from an inventory


def cell_id(scenario: Scenario, settings: RunSettings, name: str | None = None) -> str:
    """A stable hash of the scenario, engine, cost model and engine version,
    and of the VM's name when an inventory names it (two VMs of one shape
    are two cells).

    Canonical JSON (sorted keys, normalised types) hashed with SHA-256; 16 hex
    digits.  Equal scenarios written differently ("1GiB" vs 1073741824) share
    an id; any change of a field, the engine, a cost or ENGINE_VERSION does not.
    The fields added with roots, kernels, triggers and contention are left out
    at the value that means "as in Part I" (``engine.PART_I_VALUES``): such a
    cell gives the result it gave before they existed, and keeps its id.
    """
    # Same bytes as json.dumps({"scenario": ..., "name": ..., **identity},
    # sort_keys=True): the identity's keys (cost_model, engine,
    # engine_version) sort before "name" and "scenario", so the settings part
    # is spliced in once-encoded; "name" is left out when there is none.
    hashed = scenario_columns(scenario)
    for field_name, value in PART_I_VALUES.items():
        if hashed[field_name] == value:
            del hashed[field_name]
    columns = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    named = "" if name is None else ',"name":' + json.dumps(name)
    text = settings.identity_json[:-1] + named + ',"scenario":' + columns + "}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_cell(scenario: Scenario, settings: RunSettings, name: str | None = None) -> Cell:
    return Cell(cell_id(scenario, settings, name), scenario, name)


def run_cell(
    cell: Cell, settings: RunSettings, worker: str, guests: GuestCache | None = None
) -> dict[str, Any]:
    """One row: the scenario, its result or its error, and provenance."""
    row = {
        "cell_id": cell.cell_id,
        "name": cell.name,
        **scenario_columns(cell.scenario),
        **settings.provenance_columns(),
        "worker": worker,
    }
    start = time.perf_counter()
    try:
        result = simulate(
            cell.scenario, engine=settings.engine, cost_model=settings.cost_model, guests=guests
        )
    except Exception as err:  # a failing cell is a row, not a failed batch
        row.update(status="error", error=_describe(err))
    else:
        row.update(result.to_dict(), status="ok", error=None)
    row["sim_seconds"] = time.perf_counter() - start
    return row


def _describe(err: BaseException) -> str:
    where = traceback.extract_tb(err.__traceback__)[-1:]
    at = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
    return f"{type(err).__name__}: {err}{at}"


def run_batch(
    cells: Sequence[Cell], settings: RunSettings, worker: str = "local"
) -> list[dict[str, Any]]:
    """Run ``cells`` and return their rows.

    Cells of one VM shape run back to back and share its page table draw
    (the fast engine's GuestCache): in a grid most cells differ only in
    strategy, kernel, vCPUs or scheduling.  A cell with an SMM root draws a
    second table, so the cache holds two, and the cells with an SMM root of
    one shape run after those without."""
    guests = GuestCache(size=2)
    keys = (*GuestCache.KEY, "smm_populated_ratio")
    shape = [tuple(getattr(c.scenario, f) for f in keys) for c in cells]
    order = sorted(range(len(cells)), key=lambda i: shape[i])
    return [run_cell(cells[i], settings, worker, guests) for i in order]


def error_table(cells: Sequence[Cell], settings: RunSettings, message: str) -> pa.Table:
    """Rows for cells that could not be run at all (their worker lost for good)."""
    rows = [
        {
            "cell_id": c.cell_id,
            "name": c.name,
            **scenario_columns(c.scenario),
            **settings.provenance_columns(),
            "status": "error",
            "error": message,
        }
        for c in cells
    ]
    return rows_table(rows)


# A range of the grid ---------------------------------------------------------------


@dataclass
class RangeCounts:
    """What became of a range's combinations."""

    grid: GridCounts = field(default_factory=GridCounts)
    resumed: int = 0  # skipped: already in the dataset
    duplicates: int = 0  # skipped: an earlier combination makes the same cell
    ok: int = 0
    failed: int = 0  # error rows
    seconds: float = 0.0  # the worker's time on the range


@dataclass
class RangeResult:
    """A range's rows (an Arrow table of ROW_SCHEMA, or encoded files) and counts."""

    rows: pa.Table | None
    counts: RangeCounts
    files: list = field(default_factory=list)  # sweep.dataset's EncodedFile, when encoded


def new_cells(
    grid: Grid, settings: RunSettings, lo: int, hi: int, done: np.ndarray | None
) -> tuple[list[Cell], RangeCounts]:
    """The cells of combinations lo..hi-1 to run: valid, not excluded, not a
    duplicate of an earlier combination, not in ``done`` (sorted cell keys)."""
    counts = RangeCounts()
    cells = []
    for digits, scenario in grid.scenarios(lo, hi, counts.grid):
        name = grid.name(digits)
        if grid.is_duplicate(digits, scenario, name):
            counts.duplicates += 1
            continue
        cells.append(make_cell(scenario, settings, name))
    if done is not None and len(done) and cells:
        keys = np.array([int(c.cell_id, 16) for c in cells], dtype=np.uint64)
        at = np.minimum(np.searchsorted(done, keys), len(done) - 1)
        there = done[at] == keys
        counts.resumed = int(there.sum())
        cells = [c for c, skip in zip(cells, there.tolist(), strict=True) if not skip]
    return cells, counts


def run_range(
    grid: Grid,
    settings: RunSettings,
    lo: int,
    hi: int,
    done: np.ndarray | None = None,
    worker: str = "local",
) -> RangeResult:
    """Expand, validate, hash, skip and run combinations lo..hi-1 of ``grid``."""
    start = time.perf_counter()
    cells, counts = new_cells(grid, settings, lo, hi, done)
    rows = run_batch(cells, settings, worker)
    counts.failed = sum(r["status"] == "error" for r in rows)
    counts.ok = len(rows) - counts.failed
    table = rows_table(rows)
    counts.seconds = time.perf_counter() - start
    return RangeResult(table, counts)
