"""Structured-config schemas of the ``zapsweep`` Hydra app.

Registered in Hydra's ConfigStore so a misspelt key or a value of the wrong
type fails while the config is composed, before Ray starts, naming the key.
The YAML under ``conf/`` only fills these in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class GridConfig:
    """Values per Scenario field (an *axis*); cells are their Cartesian product.

    ``zip`` lists groups of axes that move together (their value lists are
    paired by position, so they must have equal lengths).  ``exclude`` lists
    rules, each a mapping axis -> value (or list of values); a cell matching
    every entry of a rule is left out.  Values compare as written in the grid.

    ``memslots`` values are slot lists (each a list of mappings with ``gpa``,
    ``size`` and optional ``page_size`` and ratios, sizes like ``"2GiB"``);
    ``null`` is the preset ``layout``.  A memslot cell's guest memory is its
    slots' total: ``guest_memory`` null (the default: 1 GiB for a preset).
    """

    paging_levels: list[int] = field(default_factory=lambda: [4])
    guest_memory: list[str | None] = field(default_factory=lambda: [None])
    page_size: list[str] = field(default_factory=lambda: ["4K"])
    populated_ratio: list[float] = field(default_factory=lambda: [1.0])
    accessed_ratio: list[float] = field(default_factory=lambda: [1.0])
    dirty_ratio: list[float] = field(default_factory=lambda: [0.5])
    zap_levels: list[str] = field(default_factory=lambda: ["two_pass"])
    vcpus: list[int] = field(default_factory=lambda: [1])
    host_phys_bits: list[int | None] = field(default_factory=lambda: [None])
    resched: list[str] = field(default_factory=lambda: ["tick"])
    resched_interval_us: list[float] = field(default_factory=lambda: [1000.0])
    mmu_lock: list[str] = field(default_factory=lambda: ["write"])
    flush_on_yield: list[bool] = field(default_factory=lambda: [False])
    rcu_stall_timeout_s: list[float] = field(default_factory=lambda: [21.0])
    seed: list[int] = field(default_factory=lambda: [0])
    layout: list[str] = field(default_factory=lambda: ["flat"])
    memslots: list[Any] = field(default_factory=lambda: [None])
    split_ratio: list[float] = field(default_factory=lambda: [0.0])
    zip: list[list[str]] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RayConfig:
    """Where the cells run.

    ``address: null`` starts an embedded local Ray (loopback, no dashboard)
    unless ``RAY_ADDRESS`` is set; ``auto``, ``host:port`` or ``ray://...``
    joins an existing cluster and ships this code with a runtime environment.
    """

    address: str | None = None
    num_cpus: int | None = None  # local Ray only; null = all cores
    object_store_memory: int | None = None  # local Ray only, bytes
    max_retries: int = 3  # re-runs of a range whose worker died
    connect_timeout_s: float = 30.0  # a cluster that does not answer by then is an error


@dataclass
class BatchConfig:
    """How the grid is cut into ranges (one Ray task each) and how many run at once."""

    size: int | None = None  # grid combinations per range; null = auto (at most 256)
    max_in_flight: int | None = None  # null = 2 x the cluster's CPUs


@dataclass
class ProgressConfig:
    bar: bool | None = None  # null = a bar on a terminal, log lines otherwise
    log_interval_s: float = 10.0


@dataclass
class SweepConfig:
    grid: GridConfig = field(default_factory=GridConfig)
    engine: str = "fast"
    # The chosen conf/cost_model/<name>.yaml (a config group), checked by
    # engine.load_cost_model, which names a missing or bad cost.
    cost_model: dict[str, Any] = field(default_factory=dict)
    ray: RayConfig = field(default_factory=RayConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    results_dir: str = "results"  # inside the run directory
    report: bool = True  # write the report after the sweep (zapsweep-report)


def register_configs() -> None:
    """The schema of the whole config.  It types ``grid`` and ``ray`` too, so the
    files of those groups are checked as they merge in, and no schema is offered
    as a group's option (``grid=...`` lists only real grids)."""
    ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)
