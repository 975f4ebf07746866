"""zapsweep's engine: simulate KVM's TDP MMU root zap under a cost model.

``from engine import Scenario, simulate`` (spec section 7).  A pure library:
no Ray, Hydra or Parquet here.
"""

from __future__ import annotations

from pathlib import Path

from .cost_model import (
    COST_FIELDS,
    DEFAULT_COST_MODEL,
    CostModel,
    available_cost_models,
    event_counts,
    load_cost_model,
    total_ps,
)
from .fast import GuestCache
from .memslot import Memslot, memslots_text
from .result import RESULT_FIELDS, ZapResult
from .scenario import (
    LAYOUT_PRESETS,
    SCENARIO_FIELDS,
    Scenario,
    strategy_levels,
    strategy_name,
)
from .units import ScenarioError, format_memory, parse_memory

# Bumped whenever a change could alter any engine's output; part of cell_id.
ENGINE_VERSION = "2"
ENGINES = ("fast", "reference")
DEFAULT_ENGINE = "fast"


def simulate(
    scenario: Scenario,
    engine: str = DEFAULT_ENGINE,
    cost_model: str | Path | CostModel | dict = DEFAULT_COST_MODEL,
    guests=None,
) -> ZapResult:
    """Simulate the root zap of ``scenario`` with ``engine`` under ``cost_model``.

    ``guests`` (an ``engine.fast.GuestCache``) lets a caller that simulates
    many scenarios of one VM shape draw its page table once; the fast engine
    uses it, the reference engine builds its own table every time.
    """
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario must be an engine.Scenario, not {type(scenario).__name__}")
    model = load_cost_model(cost_model)
    if engine == "reference":
        from .reference import simulate_reference

        return simulate_reference(scenario, model)
    if engine == "fast":
        from .fast import simulate_fast

        return simulate_fast(scenario, model, guests)
    raise ScenarioError("engine", engine, f"one of {list(ENGINES)}")


__all__ = [
    "COST_FIELDS",
    "LAYOUT_PRESETS",
    "DEFAULT_COST_MODEL",
    "ENGINES",
    "ENGINE_VERSION",
    "RESULT_FIELDS",
    "SCENARIO_FIELDS",
    "CostModel",
    "GuestCache",
    "Memslot",
    "Scenario",
    "ScenarioError",
    "ZapResult",
    "available_cost_models",
    "event_counts",
    "total_ps",
    "format_memory",
    "load_cost_model",
    "memslots_text",
    "parse_memory",
    "simulate",
    "strategy_levels",
    "strategy_name",
]
