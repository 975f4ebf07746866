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
from .events import ZapEvents, zap_events
from .fast import GuestCache
from .kernel import (
    PREEMPT_MODELS,
    ROOT_ZAP_MODES,
    TRIGGERS,
    KernelPreset,
    available_kernels,
    kernel_preset,
)
from .memslot import Memslot, memslots_text
from .result import RESULT_FIELDS, ZapResult
from .scenario import (
    KERNEL_STRATEGY,
    LAYOUT_PRESETS,
    PART_I_VALUES,
    PRESET_FIELDS,
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
    "KERNEL_STRATEGY",
    "LAYOUT_PRESETS",
    "PART_I_VALUES",
    "PREEMPT_MODELS",
    "PRESET_FIELDS",
    "ROOT_ZAP_MODES",
    "TRIGGERS",
    "DEFAULT_COST_MODEL",
    "ENGINES",
    "ENGINE_VERSION",
    "RESULT_FIELDS",
    "SCENARIO_FIELDS",
    "CostModel",
    "GuestCache",
    "KernelPreset",
    "Memslot",
    "Scenario",
    "ScenarioError",
    "ZapEvents",
    "ZapResult",
    "available_cost_models",
    "available_kernels",
    "event_counts",
    "total_ps",
    "format_memory",
    "kernel_preset",
    "load_cost_model",
    "memslots_text",
    "parse_memory",
    "simulate",
    "strategy_levels",
    "strategy_name",
    "zap_events",
]
