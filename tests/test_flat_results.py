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
RETIRED = "upstream-6.13"


def replay(row: dict) -> tuple[Scenario, str, dict]:
    """The scenario, cost model and expected result of a recorded row today."""
    expected = dict(row["result"])
    if row["cost_model"] != RETIRED:
        return Scenario(**row["scenario"]), row["cost_model"], expected
    expected.update(accessed_writebacks=0, dirty_writebacks=0)
    return Scenario(**row["scenario"], ad_writeback=False), "seed-2022", expected


def test_rows_of_the_retired_model_are_among_the_recorded() -> None:
    assert sum(row["cost_model"] == RETIRED for row in ROWS) >= 40


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_flat_scenarios_keep_their_results(engine) -> None:
    rows = ROWS if engine == "fast" else ROWS[::3]
    for row in rows:
        scenario, cost_model, expected = replay(row)
        assert scenario.layout == "flat" and scenario.memslots is None
        result = simulate(scenario, engine, cost_model).to_dict()
        assert {k: result[k] for k in expected} == expected, row["scenario"]
        assert result["roots_zapped"] == 1 and result["wall_ns"] == result["total_ns"]
        at_page_size = LEVEL_FIELD[scenario.page_size]
        assert result[at_page_size] == result["leaf_zapped"]
        assert sum(result[f] for f in LEVEL_FIELD.values()) == result["leaf_zapped"]
