"""The scenario: one VM shape and one zap strategy, validated when built.

Vocabulary follows arch/x86/kvm/mmu: level 1 = 4K, 2 = 2M, 3 = 1G, 4 = 512G,
5 = 256T; the root is one table at level ``paging_levels``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from .geometry import PAGE_SHIFT, PTES_PER_TABLE, level_bytes

LEVEL_NAMES = {1: "4K", 2: "2M", 3: "1G", 4: "512G", 5: "256T"}
LEVEL_BY_NAME = {name: level for level, name in LEVEL_NAMES.items()}
PAGE_SIZES = ("4K", "2M", "1G")
PAGING_LEVELS = (4, 5)
RESCHED_POLICIES = ("always", "never", "tick")
MMU_LOCK_MODES = ("write", "read")
DEFAULT_HOST_PHYS_BITS = {4: 46, 5: 52}
# x86 MAXPHYADDR is at most 52 bits; below 32 no real host exists.
HOST_PHYS_BITS_RANGE = (32, 52)

# The four strategies the spec names (section 4). "per_level" depends on the
# paging depth; "upstream" has no 512G pass even with 5-level paging.
NAMED_STRATEGIES = ("root", "two_pass", "per_level", "upstream")

_MEMORY_UNITS = {
    "": 1,
    "B": 1,
    "K": 1 << 10,
    "KiB": 1 << 10,
    "M": 1 << 20,
    "MiB": 1 << 20,
    "G": 1 << 30,
    "GiB": 1 << 30,
    "T": 1 << 40,
    "TiB": 1 << 40,
    "P": 1 << 50,
    "PiB": 1 << 50,
}
_MEMORY_RE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")


class ScenarioError(ValueError):
    """A scenario field holds a value the model does not allow.

    ``field`` names the offending field, ``value`` is what was given and
    ``allowed`` says what would have been accepted.
    """

    def __init__(self, field: str, value: Any, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is invalid: allowed {allowed}")


def parse_memory(value: Any, field_name: str = "guest_memory") -> int:
    """Parse a memory size: an int of bytes or a string like ``"512GiB"``.

    Binary units only (KiB, MiB, GiB, TiB, PiB, or K/M/G/T/P): "12TB" is
    refused because a decimal terabyte is not a whole number of pages.
    """
    allowed = "a positive byte count or an integer with a unit KiB/MiB/GiB/TiB/PiB (e.g. '512GiB')"
    if isinstance(value, bool):
        raise ScenarioError(field_name, value, allowed)
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ScenarioError(field_name, value, allowed)
        n = int(value)
    elif isinstance(value, str):
        m = _MEMORY_RE.match(value)
        if not m or m.group(2) not in _MEMORY_UNITS:
            raise ScenarioError(field_name, value, allowed)
        n = int(m.group(1)) * _MEMORY_UNITS[m.group(2)]
    else:
        raise ScenarioError(field_name, value, allowed)
    if n <= 0:
        raise ScenarioError(field_name, value, allowed)
    return n


def format_memory(n: int) -> str:
    """Inverse of :func:`parse_memory` for display: 549755813888 -> '512GiB'."""
    for unit in ("PiB", "TiB", "GiB", "MiB", "KiB"):
        size = _MEMORY_UNITS[unit]
        if n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def strategy_levels(name: str, paging_levels: int) -> tuple[str, ...]:
    """Zap levels of a named strategy for a given paging depth."""
    if name == "root":
        return ("root",)
    if name == "two_pass":
        return ("1G", "root")
    if name == "per_level":
        return tuple(LEVEL_NAMES[lv] for lv in range(1, paging_levels)) + ("root",)
    if name == "upstream":
        return ("4K", "2M", "1G", "root")
    raise ScenarioError("zap_levels", name, f"one of {NAMED_STRATEGIES} or a level list")


def strategy_name(zap_levels: tuple[str, ...], paging_levels: int) -> str:
    """The name of a level list: 'root', 'two_pass', 'per_level', 'upstream' or 'a,b,c'.

    With 4-level paging 'per_level' and 'upstream' are the same list; it is
    reported as 'per_level'.
    """
    for name in ("root", "two_pass", "per_level", "upstream"):
        if tuple(zap_levels) == strategy_levels(name, paging_levels):
            return name
    return ",".join(zap_levels)


def _normalize_zap_levels(value: Any, paging_levels: int) -> tuple[str, ...]:
    if isinstance(value, str) and value in NAMED_STRATEGIES:  # most cells of a sweep
        return strategy_levels(value, paging_levels)
    below_root = list(LEVEL_NAMES.values())[: paging_levels - 1]
    deeper = [LEVEL_NAMES[lv] for lv in range(paging_levels, max(PAGING_LEVELS))]
    allowed = (
        f"a strategy name {NAMED_STRATEGIES} or an ascending list of {below_root}"
        + (f" (and {deeper} with {max(PAGING_LEVELS)}-level paging)" if deeper else "")
        + " (or level numbers) ending at 'root'"
    )
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ScenarioError("zap_levels", value, allowed)
    if not items:
        raise ScenarioError("zap_levels", value, allowed)
    levels: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise ScenarioError("zap_levels", value, allowed)
        if isinstance(item, int):
            level = item
        elif isinstance(item, str) and item == "root":
            level = paging_levels
        elif isinstance(item, str) and item in LEVEL_BY_NAME:
            level = LEVEL_BY_NAME[item]
            if level >= paging_levels:
                raise ScenarioError(
                    "zap_levels",
                    value,
                    f"levels below the root ({paging_levels}-level paging) then 'root'; "
                    f"{item!r} is not below the root",
                )
        elif isinstance(item, str) and item.isdigit():
            level = int(item)
        else:
            raise ScenarioError("zap_levels", value, allowed)
        if not 1 <= level <= paging_levels:
            raise ScenarioError("zap_levels", value, allowed)
        levels.append(level)
    if any(b <= a for a, b in zip(levels, levels[1:], strict=False)):
        raise ScenarioError("zap_levels", value, "strictly ascending levels; " + allowed)
    if levels[-1] != paging_levels:
        raise ScenarioError("zap_levels", value, "a list ending at 'root'; " + allowed)
    return tuple("root" if lv == paging_levels else LEVEL_NAMES[lv] for lv in levels)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if isinstance(value, bool) or value not in choices:
        raise ScenarioError(name, value, f"one of {list(choices)}")


def _check_ratio(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(name, value, "a number in [0, 1]")
    if not (0.0 <= float(value) <= 1.0):  # also rejects NaN
        raise ScenarioError(name, value, "a number in [0, 1]")
    return float(value)


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    if isinstance(value, bool):
        raise ScenarioError(name, value, allowed)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        raise ScenarioError(name, value, allowed)
    return value


def _check_positive(name: str, value: Any, ps_per_unit: int) -> float | int:
    """A positive finite duration that is at least one picosecond (the
    engines' clock tick), so that it never rounds to zero."""
    allowed = f"a finite number >= {1 / ps_per_unit:g} (one picosecond)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(name, value, allowed)
    if not (math.isfinite(value) and round(value * ps_per_unit) >= 1):
        raise ScenarioError(name, value, allowed)
    return value


@dataclass(frozen=True)
class Scenario:
    """One root zap to simulate (spec section 7).

    Built from plain values; every field is checked and normalized in
    ``__post_init__`` so that an invalid scenario cannot exist.
    """

    paging_levels: int = 4
    guest_memory: int | str = "1GiB"
    page_size: str = "4K"
    populated_ratio: float = 1.0
    accessed_ratio: float = 1.0
    dirty_ratio: float = 0.5
    zap_levels: tuple[str, ...] | str = ("1G", "root")
    vcpus: int = 1
    host_phys_bits: int | None = None
    resched: str = "tick"
    resched_interval_us: float = 1000
    mmu_lock: str = "write"
    flush_on_yield: bool = False
    rcu_stall_timeout_s: float = 21
    seed: int = 0

    def __post_init__(self) -> None:
        s = object.__setattr__
        _check_choice("paging_levels", self.paging_levels, PAGING_LEVELS)
        _check_choice("page_size", self.page_size, PAGE_SIZES)
        s(self, "guest_memory", parse_memory(self.guest_memory))
        s(self, "populated_ratio", _check_ratio("populated_ratio", self.populated_ratio))
        s(self, "accessed_ratio", _check_ratio("accessed_ratio", self.accessed_ratio))
        s(self, "dirty_ratio", _check_ratio("dirty_ratio", self.dirty_ratio))
        if self.dirty_ratio > self.accessed_ratio:
            raise ScenarioError(
                "dirty_ratio",
                self.dirty_ratio,
                f"at most accessed_ratio={self.accessed_ratio} (a dirty leaf is always accessed)",
            )
        s(self, "zap_levels", _normalize_zap_levels(self.zap_levels, self.paging_levels))
        s(self, "vcpus", _check_int("vcpus", self.vcpus, 1))
        bits = self.host_phys_bits
        if bits is None:
            bits = DEFAULT_HOST_PHYS_BITS[self.paging_levels]
        s(self, "host_phys_bits", _check_int("host_phys_bits", bits, *HOST_PHYS_BITS_RANGE))
        _check_choice("resched", self.resched, RESCHED_POLICIES)
        s(
            self,
            "resched_interval_us",
            _check_positive("resched_interval_us", self.resched_interval_us, 1_000_000),
        )
        _check_choice("mmu_lock", self.mmu_lock, MMU_LOCK_MODES)
        if not isinstance(self.flush_on_yield, bool):
            raise ScenarioError("flush_on_yield", self.flush_on_yield, "true or false")
        s(
            self,
            "rcu_stall_timeout_s",
            _check_positive("rcu_stall_timeout_s", self.rcu_stall_timeout_s, 10**12),
        )
        s(self, "seed", _check_int("seed", self.seed, 0, 2**63 - 1))

        page = level_bytes(self.leaf_level)
        if self.guest_memory % page:
            raise ScenarioError(
                "guest_memory",
                format_memory(self.guest_memory),
                f"a multiple of the page size {self.page_size}",
            )
        limit = 1 << self.host_phys_bits
        if self.guest_memory > limit:
            raise ScenarioError(
                "guest_memory",
                format_memory(self.guest_memory),
                f"at most 2^host_phys_bits = {format_memory(limit)} "
                f"(host_phys_bits={self.host_phys_bits})",
            )
        # The root table maps 512 SPTEs of level_bytes(root); e.g. 4-level
        # paging reaches 256TiB even when host_phys_bits allows more.
        reach = PTES_PER_TABLE * level_bytes(self.root_level)
        if self.guest_memory > reach:
            raise ScenarioError(
                "guest_memory",
                format_memory(self.guest_memory),
                f"at most {format_memory(reach)}, what a {self.paging_levels}-level "
                f"page table maps",
            )

    # Derived geometry -------------------------------------------------

    @property
    def root_level(self) -> int:
        return self.paging_levels

    @property
    def leaf_level(self) -> int:
        """Level at which the guest's leaf SPTEs sit (1, 2 or 3)."""
        return LEVEL_BY_NAME[self.page_size]

    @property
    def zap_level_numbers(self) -> tuple[int, ...]:
        return tuple(self.root_level if z == "root" else LEVEL_BY_NAME[z] for z in self.zap_levels)

    @property
    def guest_pages(self) -> int:
        """Number of leaf SPTEs that map the guest (present or not)."""
        return self.guest_memory // level_bytes(self.leaf_level)

    @property
    def end_gfn(self) -> int:
        """tdp_mmu_max_gfn_host(): walks stop at this GFN."""
        return 1 << (self.host_phys_bits - PAGE_SHIFT)

    @property
    def strategy(self) -> str:
        return strategy_name(self.zap_levels, self.paging_levels)

    @property
    def resched_interval_ps(self) -> int:
        return round(self.resched_interval_us * 1_000_000)

    @property
    def rcu_stall_timeout_ps(self) -> int:
        return round(self.rcu_stall_timeout_s * 1_000_000_000_000)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SCENARIO_FIELDS}


SCENARIO_FIELDS = tuple(f.name for f in fields(Scenario))
__all__ = [
    "Scenario",
    "ScenarioError",
    "SCENARIO_FIELDS",
    "parse_memory",
    "format_memory",
    "strategy_name",
    "strategy_levels",
]
