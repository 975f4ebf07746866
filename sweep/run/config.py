"""Structured-config schemas of the ``zapsweep`` Hydra app.

Registered in Hydra's ConfigStore so a misspelt key or a value of the wrong
type fails while the config is composed, before Ray starts, naming the key.
The YAML under ``conf/`` only fills these in.  ``register_help`` gives
``zapsweep --help`` its list of config groups.
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

    ``kernel`` values are preset names (``conf/kernel/<name>.yaml``; quote
    them in YAML, "6.6"), ``null`` for none.  The fields a preset sets
    (``zap_levels``, ``mmu_lock``, ``flush_on_yield``, ``ad_writeback``,
    ``root_zap``, ``flush_on_remove``) default to ``null``: the kernel's
    value for the cell's trigger, or Part I's without a kernel; a value
    given here overrides the preset.  ``zap_levels: kernel`` names the
    preset's strategy explicitly.
    """

    paging_levels: list[int] = field(default_factory=lambda: [4])
    guest_memory: list[str | None] = field(default_factory=lambda: [None])
    page_size: list[str] = field(default_factory=lambda: ["4K"])
    populated_ratio: list[float] = field(default_factory=lambda: [1.0])
    accessed_ratio: list[float] = field(default_factory=lambda: [1.0])
    dirty_ratio: list[float] = field(default_factory=lambda: [0.5])
    zap_levels: list[str | None] = field(default_factory=lambda: [None])
    vcpus: list[int] = field(default_factory=lambda: [1])
    host_phys_bits: list[int | None] = field(default_factory=lambda: [None])
    resched: list[str] = field(default_factory=lambda: ["tick"])
    resched_interval_us: list[float] = field(default_factory=lambda: [1000.0])
    mmu_lock: list[str | None] = field(default_factory=lambda: [None])
    flush_on_yield: list[bool | None] = field(default_factory=lambda: [None])
    rcu_stall_timeout_s: list[float] = field(default_factory=lambda: [21.0])
    seed: list[int] = field(default_factory=lambda: [0])
    layout: list[str] = field(default_factory=lambda: ["flat"])
    memslots: list[Any] = field(default_factory=lambda: [None])
    split_ratio: list[float] = field(default_factory=lambda: [0.0])
    smm_populated_ratio: list[float] = field(default_factory=lambda: [0.0])
    root_zap: list[str | None] = field(default_factory=lambda: [None])
    kernel: list[str | None] = field(default_factory=lambda: [None])
    trigger: list[str] = field(default_factory=lambda: ["memslot"])
    ad_writeback: list[bool | None] = field(default_factory=lambda: [None])
    preempt: list[str] = field(default_factory=lambda: ["voluntary"])
    lock_contention_us: list[float | None] = field(default_factory=lambda: [None])
    flush_on_remove: list[bool | None] = field(default_factory=lambda: [None])
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

    size: int | None = None  # grid combinations per range; null = about 2 s of a worker's time
    max_in_flight: int | None = None  # null = 2 x the cluster's CPUs


@dataclass
class ProgressConfig:
    bar: bool | None = None  # null = a bar on a terminal, log lines otherwise
    log_interval_s: float = 10.0


@dataclass
class InventoryConfig:
    """A fleet inventory: a CSV or Parquet file, one row per VM (Scenario
    columns and an optional ``name``).  Cells are its rows times the product
    of the grid's axes it does not set.  A path ends in .csv or .parquet; a
    name without one is a shipped inventory, conf/inventory/<name>.csv.  On
    the command line ``inventory=X`` means ``inventory.path=X`` (conf/inventory/
    makes ``inventory`` a config group to Hydra)."""

    path: str | None = None


@dataclass
class SweepConfig:
    grid: GridConfig = field(default_factory=GridConfig)
    inventory: InventoryConfig = field(default_factory=InventoryConfig)
    engine: str = "fast"
    # The chosen conf/cost_model/<name>.yaml (a config group), checked by
    # engine.load_cost_model, which names a missing or bad cost.
    cost_model: dict[str, Any] = field(default_factory=dict)
    ray: RayConfig = field(default_factory=RayConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    results_dir: str = "results"  # inside the run directory
    report: bool = True  # write the report after the sweep (zapsweep-report)
    # errors: re-run the cells whose row has status "error" (the run's own
    # config, from <run_dir>/.hydra/overrides.yaml); the rows they replace are
    # moved to <run_dir>/superseded/.
    retry: str | None = None
    max_failures: int | None = None  # stop the sweep after this many failed cells


def register_configs() -> None:
    """The schema of the whole config.  It types ``grid`` and ``ray`` too, so the
    files of those groups are checked as they merge in, and no schema is offered
    as a group's option (``grid=...`` lists only real grids)."""
    ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)


# Folders of conf/ that are data, not config groups: kernel presets (the
# engine reads them; a grid names them with grid.kernel), inventories.
NOT_GROUPS = ("hydra", "kernel", "inventory")


def config_groups_help() -> str:
    """The config groups and their options, as ``zapsweep --help`` lists them
    (Hydra's own list would offer conf/kernel/ as a group), then the kernel
    presets a grid can name."""
    from hydra.core.global_hydra import GlobalHydra

    from engine import available_kernels

    loader = GlobalHydra.instance().config_loader()
    lines = []
    for group in sorted(loader.list_groups("")):
        options = loader.get_group_options(group)
        if group.split("/")[0] not in NOT_GROUPS and options:
            lines.append(f"{group}: {', '.join(options)}")
    kernels = ", ".join(available_kernels())
    return "\n".join([*lines, "", f'Kernel presets (grid.kernel=["6.6",...]): {kernels}'])


def register_help() -> None:
    """The ``${zapsweep_config_groups:}`` of conf/config.yaml's help template."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(
        "zapsweep_config_groups", config_groups_help, replace=True, use_cache=False
    )
