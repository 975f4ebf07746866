"""Kernel presets: what a Linux version decides about a root zap (spec section 11).

A preset (``conf/kernel/<name>.yaml``) fixes the root-teardown strategy,
whether zapping writes A/D bits back, whether a remote TLB flush is issued
inside the removal of every table, and per trigger (a memslot update or
the VM's destruction) the mmu_lock mode, whether a flush precedes a yield
and whether roots are zapped serially or in parallel; and which preemption
models the kernel has and under which a waiting mmu_lock makes the zap
yield.  Every setting names, in ``commits``, the commits that made it so.

Loaded with PyYAML alone (no Hydra), like the cost models, and checked
strictly: a preset that misses or misspells a setting is refused, naming it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .units import ScenarioError

TRIGGERS = ("memslot", "vm_destroy")
PREEMPT_MODELS = ("none", "voluntary", "full", "lazy")
ROOT_ZAP_MODES = ("serial", "parallel")
MMU_LOCK_MODES = ("write", "read")
# The settings a preset gives per trigger, and for the kernel as a whole.
TRIGGER_SETTINGS = ("mmu_lock", "flush_on_yield", "root_zap")
KERNEL_SETTINGS = (
    "zap_levels",
    "ad_writeback",
    "flush_on_remove",
    "preempt_models",
    "contention_honoured",
)
# Every key of ``commits``: one per setting, trigger settings as "<trigger>.<name>".
SETTING_KEYS = KERNEL_SETTINGS + tuple(f"{t}.{s}" for t in TRIGGERS for s in TRIGGER_SETTINGS)
COMMIT_RE = re.compile(r"^[0-9a-f]{12}$")


@dataclass(frozen=True)
class TriggerSettings:
    """What a kernel does for one trigger."""

    mmu_lock: str
    flush_on_yield: bool
    root_zap: str


@dataclass(frozen=True)
class KernelPreset:
    """One kernel version's root-teardown behaviour."""

    name: str
    description: str
    zap_levels: str  # a strategy name or level list, as a Scenario takes it
    ad_writeback: bool
    flush_on_remove: bool
    triggers: tuple[tuple[str, TriggerSettings], ...]  # (trigger, settings), in TRIGGERS order
    preempt_models: tuple[str, ...]  # the preemption models this kernel has
    contention_honoured: tuple[str, ...]  # those under which rwlock_needbreak() can be true
    commits: tuple[tuple[str, tuple[str, ...]], ...]  # (setting key, commit ids)

    def trigger(self, trigger: str) -> TriggerSettings:
        return dict(self.triggers)[trigger]

    def scenario_fields(self, trigger: str) -> dict[str, Any]:
        """The Scenario fields this preset sets for ``trigger``."""
        t = self.trigger(trigger)
        return {
            "zap_levels": self.zap_levels,
            "ad_writeback": self.ad_writeback,
            "flush_on_remove": self.flush_on_remove,
            "mmu_lock": t.mmu_lock,
            "flush_on_yield": t.flush_on_yield,
            "root_zap": t.root_zap,
        }

    def to_dict(self) -> dict[str, Any]:
        """The resolved settings, as a run's manifest records them."""
        return {
            "description": self.description,
            "zap_levels": self.zap_levels,
            "ad_writeback": self.ad_writeback,
            "flush_on_remove": self.flush_on_remove,
            **{name: vars(settings) for name, settings in self.triggers},
            "preempt_models": list(self.preempt_models),
            "contention_honoured": list(self.contention_honoured),
            "commits": {key: list(ids) for key, ids in self.commits},
        }


def kernel_dir() -> Path:
    return Path(str(resources.files("conf") / "kernel"))


def version_key(name: str) -> tuple:
    """Sort key: by version number, then a build variant after the plain one."""
    m = re.match(r"^(\d+)\.(\d+)(.*)$", name)
    return (int(m[1]), int(m[2]), m[3]) if m else (1 << 30, 0, name)


@functools.lru_cache(maxsize=1)
def available_kernels() -> tuple[str, ...]:
    """The presets in conf/kernel/, oldest first."""
    return tuple(sorted((p.stem for p in kernel_dir().glob("*.yaml")), key=version_key))


def _bad(name: str, key: str, value: Any, allowed: str) -> ScenarioError:
    return ScenarioError(f"kernel preset {name!r}: {key}", value, allowed)


def _choice(name: str, key: str, value: Any, choices: tuple) -> Any:
    if isinstance(value, bool) or value not in choices:
        raise _bad(name, key, value, f"one of {list(choices)}")
    return value


def _flag(name: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(name, key, value, "true or false")
    return value


def _models(name: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _bad(name, key, value, f"a non-empty list of {list(PREEMPT_MODELS)}")
    return tuple(_choice(name, key, v, PREEMPT_MODELS) for v in value)


def _keys(name: str, where: str, data: dict, expected: tuple) -> None:
    extra = sorted(set(data) - set(expected))
    missing = [k for k in expected if k not in data]
    if extra or missing:
        what = f"unknown {extra}" if extra else f"missing {missing}"
        raise _bad(name, where, sorted(data), f"exactly the keys {list(expected)}; {what}")


def parse_preset(data: Any, name: str) -> KernelPreset:
    """A preset from its YAML mapping, every key checked."""
    if not isinstance(data, dict):
        raise ScenarioError("kernel", name, "a preset file holding a YAML mapping")
    top = ("name", "description", *KERNEL_SETTINGS, *TRIGGERS, "commits")
    _keys(name, "keys", data, top)
    if str(data["name"]) != name:
        raise _bad(name, "name", data["name"], f"{name!r}, the file's name")
    triggers = []
    for trigger in TRIGGERS:
        block = data[trigger]
        if not isinstance(block, dict):
            raise _bad(name, trigger, block, f"a mapping of {list(TRIGGER_SETTINGS)}")
        _keys(name, trigger, block, TRIGGER_SETTINGS)
        settings = TriggerSettings(
            _choice(name, f"{trigger}.mmu_lock", block["mmu_lock"], MMU_LOCK_MODES),
            _flag(name, f"{trigger}.flush_on_yield", block["flush_on_yield"]),
            _choice(name, f"{trigger}.root_zap", block["root_zap"], ROOT_ZAP_MODES),
        )
        triggers.append((trigger, settings))
    models = _models(name, "preempt_models", data["preempt_models"])
    honoured = _models(name, "contention_honoured", data["contention_honoured"])
    if not set(honoured) <= set(models):
        raise _bad(name, "contention_honoured", list(honoured), f"models among {list(models)}")
    commits = data["commits"]
    if not isinstance(commits, dict):
        raise _bad(name, "commits", commits, f"a mapping of {list(SETTING_KEYS)}")
    _keys(name, "commits", commits, SETTING_KEYS)
    for key, ids in commits.items():
        if not isinstance(ids, list) or not ids or not all(COMMIT_RE.match(str(c)) for c in ids):
            raise _bad(name, f"commits.{key}", ids, "a non-empty list of 12-hex commit ids")
    zap_levels = data["zap_levels"]
    if not isinstance(zap_levels, str):
        raise _bad(name, "zap_levels", zap_levels, "a strategy name or list like '1G,root'")
    return KernelPreset(
        name=name,
        description=" ".join(str(data["description"]).split()),
        zap_levels=zap_levels,
        ad_writeback=_flag(name, "ad_writeback", data["ad_writeback"]),
        flush_on_remove=_flag(name, "flush_on_remove", data["flush_on_remove"]),
        triggers=tuple(triggers),
        preempt_models=models,
        contention_honoured=honoured,
        commits=tuple((key, tuple(str(c) for c in commits[key])) for key in SETTING_KEYS),
    )


def kernel_preset(name: str) -> KernelPreset:
    """The preset ``name`` (conf/kernel/<name>.yaml), parsed once per process."""
    kernels = available_kernels()
    if not isinstance(name, str) or name not in kernels:
        raise ScenarioError(
            "kernel", name, f'one of {list(kernels)} (as text, e.g. "6.6"), or null for none'
        )
    return _load(name)


@functools.lru_cache(maxsize=64)
def _load(name: str) -> KernelPreset:
    with (kernel_dir() / f"{name}.yaml").open() as f:
        return parse_preset(yaml.safe_load(f), name)


__all__ = [
    "KernelPreset",
    "MMU_LOCK_MODES",
    "PREEMPT_MODELS",
    "ROOT_ZAP_MODES",
    "SETTING_KEYS",
    "TRIGGERS",
    "TriggerSettings",
    "available_kernels",
    "kernel_preset",
    "parse_preset",
    "version_key",
]
