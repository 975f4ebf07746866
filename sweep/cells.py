"""Cells: a scenario with its stable id, and running a batch of them.

``run_batch`` is what a Ray task executes; it is a plain function so it can be
tested and benchmarked without Ray.  A cell that raises becomes an error row;
it never fails its batch.  Rows are plain dicts: this module (what a worker
imports) needs neither pyarrow nor pandas, whose imports would cost each
worker most of a second; the driver makes them an Arrow table
(``sweep.schema.rows_table``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine import ENGINE_VERSION, GuestCache, Scenario, memslots_text, simulate
from engine.cost_model import CostModel

# Scenario fields typed float: float64 columns in the Parquet schema, so a
# ratio given as 1 is written as 1.0 (sweep.schema checks the schema agrees).
FLOAT_FIELDS = frozenset(f.name for f in dataclasses.fields(Scenario) if f.type in ("float", float))


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


@dataclass(frozen=True)
class Cell:
    cell_id: str
    scenario: Scenario


# Fields whose default means "as before they existed": left out of a cell's
# identity at that default, so that the cells of earlier grids keep their ids.
LATER_DEFAULTS = {"layout": "flat", "memslots": None, "split_ratio": 0.0}


def scenario_columns(scenario: Scenario) -> dict[str, Any]:
    """The scenario as Parquet columns: zap_levels and memslots as text,
    floats as floats."""
    row = scenario.to_dict()
    row["zap_levels"] = ",".join(scenario.zap_levels)
    row["memslots"] = memslots_text(scenario.memslots)
    for name in FLOAT_FIELDS.intersection(row):
        row[name] = float(row[name])
    row["strategy"] = scenario.strategy
    return row


def cell_id(scenario: Scenario, settings: RunSettings) -> str:
    """A stable hash of the scenario, engine, cost model and engine version.

    Canonical JSON (sorted keys, normalised types) hashed with SHA-256; 16 hex
    digits.  Equal scenarios written differently ("1GiB" vs 1073741824) share
    an id; any change of a field, the engine, a cost or ENGINE_VERSION does not.
    """
    # Same bytes as json.dumps({"scenario": ..., **identity}, sort_keys=True):
    # the identity's keys (cost_model, engine, engine_version) sort before
    # "scenario", so the settings part is spliced in once-encoded.
    columns = scenario_columns(scenario)
    for name, default in LATER_DEFAULTS.items():
        if columns[name] == default:
            del columns[name]
    columns = json.dumps(columns, sort_keys=True, separators=(",", ":"))
    text = settings.identity_json[:-1] + ',"scenario":' + columns + "}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_cell(scenario: Scenario, settings: RunSettings) -> Cell:
    return Cell(cell_id(scenario, settings), scenario)


def run_cell(
    cell: Cell, settings: RunSettings, worker: str, guests: GuestCache | None = None
) -> dict[str, Any]:
    """One row: the scenario, its result or its error, and provenance."""
    row = {
        "cell_id": cell.cell_id,
        **scenario_columns(cell.scenario),
        "engine": settings.engine,
        "cost_model": settings.cost_model.name,
        "engine_version": settings.engine_version,
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
    strategy, vCPUs or scheduling."""
    guests = GuestCache(size=1)
    shape = [tuple(getattr(c.scenario, f) for f in GuestCache.KEY) for c in cells]
    order = sorted(range(len(cells)), key=lambda i: shape[i])
    return [run_cell(cells[i], settings, worker, guests) for i in order]
