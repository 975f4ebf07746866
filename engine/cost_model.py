"""Cost models: named, versioned per-event costs loaded from conf/cost_model/.

Costs are written in nanoseconds in YAML (fractions allowed) and held as
integer picoseconds, so every engine sums them exactly and in any order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .units import ScenarioError

COST_FIELDS = (
    "visit_ns",  # one loop-body execution: iterator step + yield check
    "spte_clear_ns",  # clearing one present SPTE (leaf or non-leaf), stats included
    "nonpresent_entry_ns",  # a non-present entry met by the removal recursion
    "accessed_writeback_ns",  # kvm_set_pfn_accessed -> mark_page_accessed
    "dirty_writeback_ns",  # kvm_set_pfn_dirty -> set_page_dirty
    "removed_table_ns",  # handle_removed_pt bookkeeping + call_rcu, per table
    "atomic_write_ns",  # extra per SPTE write done with an atomic xchg (mmu_lock read)
    "yield_ns",  # drop RCU and mmu_lock, cond_resched, re-take them
    "flush_base_ns",  # kvm_flush_remote_tlbs fixed part
    "flush_per_vcpu_ns",  # ... plus waiting for each vCPU to answer the IPI
)


@dataclass(frozen=True)
class CostModel:
    """Per-event costs in integer picoseconds (``*_ps``), from a named YAML."""

    name: str
    version: int
    visit_ps: int
    spte_clear_ps: int
    nonpresent_entry_ps: int
    accessed_writeback_ps: int
    dirty_writeback_ps: int
    removed_table_ps: int
    atomic_write_ps: int
    yield_ps: int
    flush_base_ps: int
    flush_per_vcpu_ps: int
    description: str = ""

    def flush_ps(self, vcpus: int) -> int:
        return self.flush_base_ps + self.flush_per_vcpu_ps * vcpus

    def as_ns(self) -> dict[str, float]:
        return {f"{k[:-3]}_ns": getattr(self, k) / 1000 for k in _PS_FIELDS}

    @classmethod
    def from_mapping(cls, data: dict[str, Any], name: str) -> CostModel:
        costs = data.get("costs", data)
        missing = [k for k in COST_FIELDS if k not in costs]
        if missing:
            raise ScenarioError(
                "cost_model", name, f"a model defining every cost; missing {missing}"
            )
        unknown = [k for k in costs if k not in COST_FIELDS] if "costs" in data else []
        if unknown:
            raise ScenarioError(
                "cost_model", name, f"only the costs {list(COST_FIELDS)}; unknown {unknown}"
            )
        ps = {}
        for key in COST_FIELDS:
            value = costs[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ScenarioError(
                    f"cost_model.{key}", value, "a finite number of nanoseconds >= 0"
                )
            ps[key[:-3] + "_ps"] = round(value * 1000)
        return cls(
            name=str(data.get("name", name)),
            version=int(data.get("version", 1)),
            description=str(data.get("description", "")),
            **ps,
        )


_PS_FIELDS = tuple(f.name for f in fields(CostModel) if f.name.endswith("_ps"))


def cost_model_dir() -> Path:
    return Path(str(resources.files("conf") / "cost_model"))


def available_cost_models() -> list[str]:
    return sorted(p.stem for p in cost_model_dir().glob("*.yaml"))


DEFAULT_COST_MODEL = "seed-2022"
# Cost models that described kernel behaviour, not a host's costs, and what
# gives their figures now.
RETIRED_COST_MODELS = {
    "upstream-6.13": (
        "A/D write-back is kernel behaviour now, not a cost: use seed-2022 with "
        "ad_writeback=false (the same times; accessed_writebacks and dirty_writebacks "
        "then count 0), or kernel=6.13"
    ),
}


def load_cost_model(model: str | Path | CostModel | dict = DEFAULT_COST_MODEL) -> CostModel:
    """A cost model by name (conf/cost_model/<name>.yaml), by path, or as given."""
    if isinstance(model, CostModel):
        return model
    if isinstance(model, dict):
        return CostModel.from_mapping(model, str(model.get("name", "inline")))
    path = Path(model)
    if path.suffix not in (".yaml", ".yml"):
        if model in RETIRED_COST_MODELS:
            raise ScenarioError("cost_model", model, RETIRED_COST_MODELS[model])
        path = cost_model_dir() / f"{model}.yaml"
    if not path.is_file():
        raise ScenarioError(
            "cost_model", str(model), f"one of {available_cost_models()} or a path to a YAML file"
        )
    with path.open() as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ScenarioError("cost_model", str(model), "a YAML mapping of costs")
    return CostModel.from_mapping(data, path.stem)


def event_counts(result, scenario) -> dict[str, int]:
    """The events a cost model charges, derived from a ZapResult.

    ``total_ps == sum(count * cost_ps)`` exactly, for every engine: the
    calibration fits costs on these same counts, so the fit and the
    simulation never disagree about what is counted.  Keys are the cost
    names of COST_FIELDS.
    """
    present_cleared = result.leaf_zapped + result.tables_freed
    # Present SPTEs cleared inside removed tables are those not cleared by
    # the walk itself (one per operation).
    nonpresent = result.removed_entries_scanned - (present_cleared - result.ops)
    atomic = result.ops + result.removed_entries_scanned if scenario.mmu_lock == "read" else 0
    # A flush waits for the running vCPUs (none once the VM is being destroyed).
    return {
        "visit_ns": result.visits,
        "spte_clear_ns": present_cleared,
        "nonpresent_entry_ns": nonpresent,
        "accessed_writeback_ns": result.accessed_writebacks,
        "dirty_writeback_ns": result.dirty_writebacks,
        "removed_table_ns": result.tables_freed,
        "atomic_write_ns": atomic,
        "yield_ns": result.yields,
        "flush_base_ns": result.tlb_flushes,
        "flush_per_vcpu_ns": result.tlb_flushes * scenario.running_vcpus,
    }


def total_ps(counts: dict[str, int], model: CostModel) -> int:
    """Exact total time of the given event counts under ``model``."""
    return sum(n * getattr(model, key[:-3] + "_ps") for key, n in counts.items())
