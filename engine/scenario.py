"""The scenario: one VM shape and one zap strategy, validated when built.

Vocabulary follows arch/x86/kvm/mmu: level 1 = 4K, 2 = 2M, 3 = 1G, 4 = 512G,
5 = 256T; the root is one table at level ``paging_levels``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .geometry import PAGE_SHIFT, PTES_PER_TABLE, level_bytes
from .kernel import (
    MMU_LOCK_MODES,
    PREEMPT_MODELS,
    ROOT_ZAP_MODES,
    TRIGGERS,
    KernelPreset,
    kernel_preset,
)
from .memslot import (
    MAX_MEMSLOTS,
    MEMSLOT_FIELDS,
    MEMSLOT_RATIOS,
    PAGE_BYTES,
    Q35_HOLE,
    Memslot,
    flat_slots,
    q35_slots,
)
from .units import ScenarioError, format_memory, parse_memory

LEVEL_NAMES = {1: "4K", 2: "2M", 3: "1G", 4: "512G", 5: "256T"}
LEVEL_BY_NAME = {name: level for level, name in LEVEL_NAMES.items()}
PAGE_SIZES = ("4K", "2M", "1G")
PAGING_LEVELS = (4, 5)
RESCHED_POLICIES = ("always", "never", "tick")
LAYOUT_PRESETS = ("flat", "q35")
DEFAULT_HOST_PHYS_BITS = {4: 46, 5: 52}
# x86 MAXPHYADDR is at most 52 bits; below 32 no real host exists.
HOST_PHYS_BITS_RANGE = (32, 52)

# The four strategies the spec names (section 4). "per_level" depends on the
# paging depth; "upstream" has no 512G pass even with 5-level paging.
NAMED_STRATEGIES = ("root", "two_pass", "per_level", "upstream")
# zap_levels="kernel": the kernel preset's own strategy.
KERNEL_STRATEGY = "kernel"

# The fields a kernel preset sets (for the scenario's trigger), and what
# each means without a preset: Part I's kernel.  Left None, a field takes
# the preset's value, or this one.
PRESET_FIELDS: dict[str, Any] = {
    "zap_levels": ("1G", "root"),
    "mmu_lock": "write",
    "flush_on_yield": False,
    "ad_writeback": True,
    "root_zap": "serial",
    "flush_on_remove": False,
}
# The fields added with roots, kernels, triggers and contention (spec
# sections 10 to 12), at the value that means "as in Part I".
PART_I_VALUES: dict[str, Any] = {
    "smm_populated_ratio": 0.0,
    "root_zap": "serial",
    "kernel": None,
    "trigger": "memslot",
    "ad_writeback": True,
    "preempt": "voluntary",
    "lock_contention_us": None,
    "flush_on_remove": False,
}
# Address space 1 (SMM) draws its population from a seed of its own.
_SMM_SEED_SALT = 0x534D4D  # "SMM"
_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def address_space_seed(seed: int, as_id: int) -> int:
    """The seed of address space ``as_id``'s root: ``seed`` itself for the
    main one (0), a keyed derivation of it for SMM (1), so that the two
    roots' populations are independent draws."""
    if as_id == 0:
        return seed
    return _splitmix64(seed ^ (_SMM_SEED_SALT << 32 | as_id)) & ((1 << 63) - 1)


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


def _check_choice(name: str, value: Any, choices: tuple, more: str = "") -> None:
    if isinstance(value, bool) or value not in choices:
        raise ScenarioError(name, value, f"one of {list(choices)}{more}")


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(name, value, "true or false")
    return value


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


def _check_positive(name: str, value: Any, ps_per_unit: int, more: str = "") -> float | int:
    """A positive finite duration that is at least one picosecond (the
    engines' clock tick), so that it never rounds to zero."""
    allowed = f"a finite number >= {1 / ps_per_unit:g} (one picosecond){more and ' ' + more}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(name, value, allowed)
    if not (math.isfinite(value) and round(value * ps_per_unit) >= 1):
        raise ScenarioError(name, value, allowed)
    return value


def _check_dirty(prefix: str, dirty: float, accessed: float) -> None:
    if dirty > accessed:
        raise ScenarioError(
            prefix + "dirty_ratio",
            dirty,
            f"at most accessed_ratio={accessed} (a dirty leaf is always accessed)",
        )


def _memslot(i: int, item: Any, template: Memslot, bits: int, reach: int) -> Memslot:
    """Slot ``i`` of a memslots list, checked and with None fields taken
    from ``template`` (the scenario's page size and ratios)."""
    where = f"memslots[{i}]"
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - set(MEMSLOT_FIELDS))
        if unknown:
            raise ScenarioError(
                f"{where}.{unknown[0]}", item[unknown[0]], f"one of {list(MEMSLOT_FIELDS)}"
            )
        missing = [k for k in ("gpa", "size") if k not in item]
        if missing:
            raise ScenarioError(f"{where}.{missing[0]}", None, "a GPA range: both gpa and size")
        item = Memslot(**item)
    elif not isinstance(item, Memslot):
        raise ScenarioError(
            where, item, "a Memslot or a mapping with gpa, size and optional page_size and ratios"
        )
    gpa = parse_memory(item.gpa, f"{where}.gpa", allow_zero=True)
    size = parse_memory(item.size, f"{where}.size")
    for name, value in (("gpa", gpa), ("size", size)):
        if value % PAGE_BYTES:
            raise ScenarioError(
                f"{where}.{name}", getattr(item, name), "a multiple of 4KiB (the page size)"
            )
    limit = min(1 << bits, reach)
    if gpa + size > limit:
        name = "gpa" if gpa >= limit else "size"
        raise ScenarioError(
            f"{where}.{name}",
            getattr(item, name),
            f"a slot ending at or below {format_memory(limit)} (2^host_phys_bits with "
            f"host_phys_bits={bits}, and what the page table maps); it ends at "
            f"{format_memory(gpa + size)}",
        )
    resolved = {"gpa": gpa, "size": size}
    page_size = template.page_size if item.page_size is None else item.page_size
    if isinstance(page_size, bool) or page_size not in PAGE_SIZES:
        raise ScenarioError(f"{where}.page_size", page_size, f"one of {list(PAGE_SIZES)}")
    resolved["page_size"] = page_size
    for name in MEMSLOT_RATIOS:
        value = getattr(item, name)
        resolved[name] = _check_ratio(
            f"{where}.{name}", getattr(template, name) if value is None else value
        )
    _check_dirty(where + ".", resolved["dirty_ratio"], resolved["accessed_ratio"])
    return Memslot(**resolved)


def _memslots(value: Any, template: Memslot, bits: int, reach: int) -> tuple[Memslot, ...]:
    """A memslots list, checked, resolved and sorted by GPA; slots must not overlap."""
    allowed = f"a non-empty list of at most {MAX_MEMSLOTS} slots (mappings with gpa and size)"
    if isinstance(value, (str, bytes, Mapping, Memslot)) or not isinstance(value, Sequence):
        raise ScenarioError("memslots", value, allowed)
    if not 0 < len(value) <= MAX_MEMSLOTS:
        raise ScenarioError("memslots", value, allowed)
    slots = [(_memslot(i, item, template, bits, reach), i) for i, item in enumerate(value)]
    slots.sort()
    for (prev, j), (slot, i) in zip(slots, slots[1:], strict=False):
        if slot.gpa < prev.end:
            raise ScenarioError(
                f"memslots[{i}].gpa",
                value[i]["gpa"] if isinstance(value[i], Mapping) else value[i].gpa,
                f"a GPA at or above {format_memory(prev.end)}, the end of memslots[{j}] "
                f"(from {format_memory(prev.gpa)}): slots do not overlap",
            )
    return tuple(slot for slot, _ in slots)


@dataclass(frozen=True)
class Scenario:
    """One root zap to simulate (spec sections 7 and 12).

    Built from plain values; every field is checked and normalized in
    ``__post_init__`` so that an invalid scenario cannot exist.

    Guest memory is a list of memslots (``slots``): derived from
    ``guest_memory`` by the ``layout`` preset (``flat``, ``q35``), or given
    as ``memslots``; then ``layout`` reads ``"memslots"`` and
    ``guest_memory`` is the slots' total.  ``page_size``, the ratios and
    ``split_ratio`` apply to every slot of a preset, and to each given slot
    that does not set its own.

    ``kernel`` names a preset (``conf/kernel/<name>.yaml``): the fields of
    PRESET_FIELDS left None take its values for the ``trigger``, and
    ``zap_levels="kernel"`` is its strategy; a field given explicitly
    wins.  Without a kernel they take Part I's values.  The fields hold the
    resolved values once built, so ``dataclasses.replace`` of a built
    scenario treats them as explicit.
    """

    paging_levels: int = 4
    guest_memory: int | str | None = None  # "1GiB" unless memslots say otherwise
    page_size: str = "4K"
    populated_ratio: float = 1.0
    accessed_ratio: float = 1.0
    dirty_ratio: float = 0.5
    zap_levels: tuple[str, ...] | str | None = None  # the kernel's, or 1G,root
    vcpus: int = 1
    host_phys_bits: int | None = None
    resched: str = "tick"
    resched_interval_us: float = 1000
    mmu_lock: str | None = None  # the kernel's for the trigger, or write
    flush_on_yield: bool | None = None  # the kernel's for the trigger, or false
    rcu_stall_timeout_s: float = 21
    seed: int = 0
    layout: str = "flat"
    memslots: tuple[Memslot, ...] | None = None
    split_ratio: float = 0.0
    smm_populated_ratio: float = 0.0  # > 0: a second root, SMM's, over the same slots
    root_zap: str | None = None  # the kernel's for the trigger, or serial
    kernel: str | None = None
    trigger: str = "memslot"
    ad_writeback: bool | None = None  # the kernel's, or true
    preempt: str = "voluntary"
    lock_contention_us: float | None = None  # a waiter for mmu_lock every this many us
    flush_on_remove: bool | None = None  # the kernel's, or false (a flush per removed table)

    def __post_init__(self) -> None:
        s = object.__setattr__
        _check_choice("paging_levels", self.paging_levels, PAGING_LEVELS)
        _check_choice("page_size", self.page_size, PAGE_SIZES)
        s(self, "populated_ratio", _check_ratio("populated_ratio", self.populated_ratio))
        s(self, "accessed_ratio", _check_ratio("accessed_ratio", self.accessed_ratio))
        s(self, "dirty_ratio", _check_ratio("dirty_ratio", self.dirty_ratio))
        _check_dirty("", self.dirty_ratio, self.accessed_ratio)
        s(self, "split_ratio", _check_ratio("split_ratio", self.split_ratio))
        s(
            self,
            "smm_populated_ratio",
            _check_ratio("smm_populated_ratio", self.smm_populated_ratio),
        )
        self._apply_kernel()
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
        _check_bool("flush_on_yield", self.flush_on_yield)
        _check_bool("ad_writeback", self.ad_writeback)
        _check_bool("flush_on_remove", self.flush_on_remove)
        _check_choice("root_zap", self.root_zap, ROOT_ZAP_MODES)
        if self.lock_contention_us is not None:
            s(
                self,
                "lock_contention_us",
                _check_positive(
                    "lock_contention_us", self.lock_contention_us, 1_000_000, "or null (no waiter)"
                ),
            )
        s(
            self,
            "rcu_stall_timeout_s",
            _check_positive("rcu_stall_timeout_s", self.rcu_stall_timeout_s, 10**12),
        )
        s(self, "seed", _check_int("seed", self.seed, 0, 2**63 - 1))
        if self.memslots is None:
            self._derive_slots()
        else:
            self._given_slots()

    def _apply_kernel(self) -> None:
        """Check kernel, trigger and preempt, and fill in the fields left None."""
        s = object.__setattr__
        preset = None if self.kernel is None else kernel_preset(self.kernel)
        _check_choice("trigger", self.trigger, TRIGGERS)
        models = PREEMPT_MODELS if preset is None else preset.preempt_models
        more = "" if preset is None else f" (the models kernel {preset.name} has)"
        _check_choice("preempt", self.preempt, models, more)
        given = preset.scenario_fields(self.trigger) if preset is not None else PRESET_FIELDS
        if self.zap_levels == KERNEL_STRATEGY:
            if preset is None:
                raise ScenarioError(
                    "zap_levels", KERNEL_STRATEGY, "'kernel' only with a kernel preset (kernel=...)"
                )
            s(self, "zap_levels", None)
        for name in PRESET_FIELDS:
            if getattr(self, name) is None:
                s(self, name, given[name])

    @property
    def preset(self) -> KernelPreset | None:
        return None if self.kernel is None else kernel_preset(self.kernel)

    def _template(self) -> Memslot:
        return Memslot(
            0,
            0,
            self.page_size,
            self.populated_ratio,
            self.accessed_ratio,
            self.dirty_ratio,
            self.split_ratio,
        )

    def _given_slots(self) -> None:
        s = object.__setattr__
        if self.layout not in ("flat", "memslots"):
            raise ScenarioError(
                "layout",
                self.layout,
                "'memslots' (or the default 'flat') when memslots are given; "
                f"a preset {list(LAYOUT_PRESETS)} derives its own slots",
            )
        slots = _memslots(
            self.memslots, self._template(), self.host_phys_bits, self.page_table_reach
        )
        total = sum(slot.size for slot in slots)
        if self.guest_memory is not None and parse_memory(self.guest_memory) != total:
            raise ScenarioError(
                "guest_memory",
                self.guest_memory,
                f"the memslots' total {format_memory(total)} (or omitted, which means that)",
            )
        s(self, "memslots", slots)
        s(self, "layout", "memslots")
        s(self, "guest_memory", total)

    def _derive_slots(self) -> None:
        _check_choice("layout", self.layout, LAYOUT_PRESETS)
        memory = parse_memory("1GiB" if self.guest_memory is None else self.guest_memory)
        object.__setattr__(self, "guest_memory", memory)
        page = level_bytes(LEVEL_BY_NAME[self.page_size])
        if memory % page:
            raise ScenarioError(
                "guest_memory",
                format_memory(memory),
                f"a multiple of the page size {self.page_size}",
            )
        if self.layout == "q35" and memory <= Q35_HOLE[1]:
            raise ScenarioError(
                "guest_memory",
                format_memory(memory),
                f"more than {format_memory(Q35_HOLE[1])} with layout=q35: its low slots "
                f"[0, {format_memory(Q35_HOLE[0])}) and [{format_memory(Q35_HOLE[1])}, below 4GiB) "
                "must both hold RAM",
            )
        top = max(slot.end for slot in self.slots)
        shown = "" if self.layout == "flat" else f" (layout={self.layout} maps RAM up to {top:#x})"
        limit = 1 << self.host_phys_bits
        if top > limit:
            raise ScenarioError(
                "guest_memory",
                format_memory(memory),
                f"at most 2^host_phys_bits = {format_memory(limit)} "
                f"(host_phys_bits={self.host_phys_bits}){shown}",
            )
        # The root table maps 512 SPTEs of level_bytes(root); e.g. 4-level
        # paging reaches 256TiB even when host_phys_bits allows more.
        reach = self.page_table_reach
        if top > reach:
            raise ScenarioError(
                "guest_memory",
                format_memory(memory),
                f"at most {format_memory(reach)}, what a {self.paging_levels}-level page table "
                f"maps{shown}",
            )

    # Derived geometry -------------------------------------------------

    @property
    def root_level(self) -> int:
        return self.paging_levels

    @property
    def page_table_reach(self) -> int:
        """Bytes of GPA the root table maps: 512 SPTEs of level_bytes(root)."""
        return PTES_PER_TABLE * level_bytes(self.root_level)

    @functools.cached_property
    def slots(self) -> tuple[Memslot, ...]:
        """The guest's memslots, by GPA, every field resolved."""
        if self.memslots is not None:
            return self.memslots
        derive = flat_slots if self.layout == "flat" else q35_slots
        return derive(self.guest_memory, self._template())

    @property
    def zap_level_numbers(self) -> tuple[int, ...]:
        return tuple(self.root_level if z == "root" else LEVEL_BY_NAME[z] for z in self.zap_levels)

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
    def contention_honoured(self) -> bool:
        """Whether a waiting mmu_lock makes the zap yield: rwlock_needbreak()
        under this kernel's rule and preemption model (without a kernel, a
        waiter always gets its yield)."""
        if self.lock_contention_us is None:
            return False
        preset = self.preset
        return preset is None or self.preempt in preset.contention_honoured

    @property
    def need_break_intervals_ps(self) -> tuple[int, ...]:
        """The periods (ps of zap time) at which something asks the zap to
        yield: need_resched under ``tick``, a waiter for mmu_lock when the
        kernel honours it.  One yield answers both."""
        out = []
        if self.resched == "tick":
            out.append(self.resched_interval_ps)
        if self.contention_honoured:
            out.append(round(self.lock_contention_us * 1_000_000))
        return tuple(out)

    @property
    def running_vcpus(self) -> int:
        """vCPUs a remote TLB flush waits for: every one while the VM runs
        (a memslot update); none once the VM is being destroyed, when every
        vCPU's file (and with it its reference to the VM) is gone."""
        return 0 if self.trigger == "vm_destroy" else self.vcpus

    @functools.cached_property
    def roots(self) -> tuple[Scenario, ...]:
        """The roots a zap tears down, one scenario each (their page tables):
        this one's, then SMM's when ``smm_populated_ratio`` > 0, over the
        same memslots with each slot's populated_ratio replaced by it, drawn
        from a seed of its own (``address_space_seed``)."""
        if not self.smm_populated_ratio:
            return (self,)
        ratio = self.smm_populated_ratio
        smm = dataclasses.replace(
            self,
            populated_ratio=ratio,
            memslots=None
            if self.memslots is None
            else tuple(dataclasses.replace(m, populated_ratio=ratio) for m in self.memslots),
            seed=address_space_seed(self.seed, 1),
            smm_populated_ratio=0.0,
        )
        return (self, smm)

    @property
    def rcu_stall_timeout_ps(self) -> int:
        return round(self.rcu_stall_timeout_s * 1_000_000_000_000)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SCENARIO_FIELDS}


SCENARIO_FIELDS = tuple(f.name for f in fields(Scenario))
__all__ = [
    "KERNEL_STRATEGY",
    "LAYOUT_PRESETS",
    "PART_I_VALUES",
    "PRESET_FIELDS",
    "Memslot",
    "Scenario",
    "ScenarioError",
    "SCENARIO_FIELDS",
    "parse_memory",
    "format_memory",
    "strategy_name",
    "strategy_levels",
]
