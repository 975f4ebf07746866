"""The scenario of one cell of a run, to trace it: its row in the run's
dataset, the run's engine and cost model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
import yaml

from engine import CostModel, Scenario, load_cost_model
from sweep.dataset import RunDir, open_dataset, scenario_from_columns


class CellNotFound(LookupError):
    """No row of the run has the cell id (or a prefix names several)."""


@dataclass(frozen=True)
class RunCell:
    cell_id: str
    name: str | None
    scenario: Scenario
    engine: str
    cost_model: CostModel
    row: dict[str, Any]  # the cell's row, its result included


def run_cost_model(run: RunDir, row: dict[str, Any]) -> CostModel:
    """The run's own costs (its resolved config), else the model the row names."""
    try:
        recorded = yaml.safe_load(run.hydra_config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        recorded = {}
    model = recorded.get("cost_model") if isinstance(recorded, dict) else None
    if isinstance(model, dict) and model.get("name", row["cost_model"]) == row["cost_model"]:
        return load_cost_model(model)
    return load_cost_model(row["cost_model"])


def find_cell(run_dir: str | Path, cell_id: str) -> RunCell:
    """The cell of ``run_dir`` whose id is ``cell_id`` or begins with it."""
    run = RunDir.find(run_dir)
    if not run.result_files():
        raise CellNotFound(f"no results in {run.results}")
    dataset = open_dataset(run.results)
    if len(cell_id) == 16:
        table = dataset.to_table(filter=ds.field("cell_id") == cell_id)
    else:
        ids = dataset.to_table(columns=["cell_id"])["cell_id"]
        matches = pc.unique(ids.filter(pc.starts_with(ids, cell_id))).to_pylist()
        if len(matches) > 1:
            shown = ", ".join(sorted(matches)[:5])
            raise CellNotFound(f"{cell_id!r} begins {len(matches)} cell ids in {run.path}: {shown}")
        table = dataset.to_table(filter=ds.field("cell_id") == (matches or [cell_id])[0])
    if not table.num_rows:
        some = dataset.head(1, columns=["cell_id"])["cell_id"].to_pylist()
        raise CellNotFound(
            f"no cell {cell_id!r} in {run.results}; allowed a cell_id of its rows, or the "
            f"start of one" + (f" (e.g. {some[0]})" if some else "")
        )
    row = table.slice(0, 1).to_pylist()[0]
    return RunCell(
        row["cell_id"],
        row.get("name"),
        scenario_from_columns(row),
        row["engine"],
        run_cost_model(run, row),
        row,
    )


__all__ = ["CellNotFound", "RunCell", "find_cell"]
