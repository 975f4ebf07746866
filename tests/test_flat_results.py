"""A flat layout without memslots gives the results Part I's engines gave.

``data/flat_results.json`` holds 160 flat scenarios (random page sizes,
sizes that end inside a table, partial population, every strategy form,
scheduling policy, lock mode and both cost models) with their results as
recorded before memory layouts existed, when the fast and the reference
engine agreed on them.  Both engines must still give exactly those, and
the new per-level leaf counts put every leaf at the guest's page size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import Scenario, simulate

ROWS = json.loads((Path(__file__).parent / "data" / "flat_results.json").read_text())
LEVEL_FIELD = {"4K": "leaves_4k", "2M": "leaves_2m", "1G": "leaves_1g"}


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_flat_scenarios_keep_their_results(engine) -> None:
    rows = ROWS if engine == "fast" else ROWS[::3]
    for row in rows:
        scenario = Scenario(**row["scenario"])
        assert scenario.layout == "flat" and scenario.memslots is None
        result = simulate(scenario, engine, row["cost_model"]).to_dict()
        assert {k: result[k] for k in row["result"]} == row["result"], row["scenario"]
        at_page_size = LEVEL_FIELD[scenario.page_size]
        assert result[at_page_size] == result["leaf_zapped"]
        assert sum(result[f] for f in LEVEL_FIELD.values()) == result["leaf_zapped"]
