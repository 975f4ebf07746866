"""``retry=errors``: run again the cells whose row is an error, as they were.

An error row describes its cell in full (every Scenario column, the VM's
name), so a retry is a grid of one axis, those rows, run with the run's
settings; the cells already fine are not touched.  Before anything moves,
each rebuilt cell must hash to its row's ``cell_id``: the engine, the cost
model and the engine version must be the run's (``recorded_overrides``
starts the command line with the run's own, so they are).  Then the files
holding error rows are superseded (``sweep.dataset.superseding``): each cell
ends with one row, the new one, and the old rows stay in ``superseded/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import yaml

from engine import SCENARIO_FIELDS
from sweep.dataset import RunDir, Superseded, failed_rows, scenario_from_columns, supersede

from .cells import RunSettings, cell_id
from .grid import Axis, Grid
from .validate import RETRY_MODES, ConfigError


@dataclass(frozen=True)
class Retry:
    """What a retry runs (a grid of the failed cells) and what it moved aside."""

    grid: Grid
    superseded: list[Superseded] = field(default_factory=list)

    @property
    def cells(self) -> int:
        return self.grid.size

    def as_dict(self) -> dict:
        return {
            "mode": "errors",
            "cells": self.cells,
            "superseded": [s.as_dict() for s in self.superseded],
        }


def failed_cells_grid(rows: pa.Table | None, settings: RunSettings) -> Grid:
    """The failed rows as a grid of one axis (name and Scenario columns),
    each rebuilt cell checked against its row's id."""
    names = [c for c in ("name", *SCENARIO_FIELDS) if rows is not None and c in rows.column_names]
    values, labels, seen = [], [], set()
    for row in [] if rows is None else rows.to_pylist():
        if row["cell_id"] in seen:
            continue
        seen.add(row["cell_id"])
        scenario = scenario_from_columns(row)
        if cell_id(scenario, settings, row.get("name")) != row["cell_id"]:
            ran = {k: row.get(k) for k in ("engine", "cost_model", "engine_version")}
            raise ConfigError(
                "retry",
                "errors",
                f"the settings of the run that wrote cell {row['cell_id']} ({ran}); this "
                f"sweep has {settings.provenance_columns()} (or other costs): give "
                "hydra.run.dir=<that run> so that its own settings are used",
                message=(
                    f"retry=errors: cell {row['cell_id']} was made with {ran}, this sweep "
                    f"would make another cell ({settings.provenance_columns()}, or other "
                    "costs); run it with the settings of the run that wrote it"
                ),
            )
        values.append(tuple(row[c] for c in names))
        labels.append(f"error row of cell {row['cell_id']}")
    return Grid((Axis(tuple(names), tuple(values), tuple(labels)),))


def prepare_retry(run: RunDir, settings: RunSettings) -> Retry:
    """The grid of the run's failed cells; their files moved aside."""
    files, rows = failed_rows(run)
    grid = failed_cells_grid(rows, settings)  # refuses before anything moves
    return Retry(grid, supersede(run, files))


def recorded_overrides(args: Sequence[str]) -> list[str]:
    """For ``retry=errors hydra.run.dir=RUN``: RUN's own overrides (Hydra's
    record, .hydra/overrides.yaml) first, then the command's, which win."""
    if "retry=errors" not in args:
        return list(args)
    run_dirs = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
    if not run_dirs:
        return list(args)
    path = RunDir.at(Path(run_dirs[-1])).hydra_overrides
    try:
        recorded = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return list(args)
    given = {a.split("=", 1)[0].lstrip("+~") for a in args}
    keep = [
        o for o in recorded if isinstance(o, str) and o.split("=", 1)[0].lstrip("+~") not in given
    ]
    return [*keep, *args]


__all__ = ["RETRY_MODES", "Retry", "failed_cells_grid", "prepare_retry", "recorded_overrides"]
