"""The ``zapsweep`` config as Hydra composes it, with Hydra's errors as ``ConfigError``.

``compose_config`` composes the config of a command line the way the Hydra app
will (the same ``conf`` package, schema and overrides), so that every setting
can be checked, and the run directory known, before Hydra creates anything.
A composition error (a value of the wrong type, a group option that does not
exist, an override that does not parse) becomes one ``ConfigError`` naming
the key and what is allowed, as every other refused setting does.
``job_config`` is what the command line and ``sweep.run`` check: the keys,
then the composed config without Hydra's own node, and the run directory.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from .config import SweepConfig, register_configs
from .validate import ConfigError, check_overrides

CONFIG_MODULE = "conf"
CONFIG_NAME = "config"


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The composed config (``hydra`` node included) of ``overrides``."""
    from hydra import compose, initialize_config_module
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    register_configs()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            return compose(CONFIG_NAME, overrides=list(overrides), return_hydra_config=True)
    except MissingConfigException as err:
        raise missing_option(err) from None
    except OverrideParseException as err:
        raise ConfigError("override", None, "", _first_line(err)) from None
    except ConfigCompositionException as err:
        raise bad_value(err) from None


def job_config(overrides: Sequence[str]) -> tuple[DictConfig, Path]:
    """The config a sweep of ``overrides`` runs, its keys checked first
    (``check_overrides``), without Hydra's own node (which resolves only
    inside a Hydra run), and the run directory that node names."""
    check_overrides(overrides)
    cfg = compose_config(overrides)
    run_dir = Path(cfg.hydra.run.dir)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run_dir


def _first_line(err: BaseException | None) -> str:
    text = str(err or "").strip()
    return text.splitlines()[0] if text else type(err).__name__


def missing_option(err: Any) -> ConfigError:
    """``grid=smok``: the group's options, as Hydra found them."""
    missing = getattr(err, "missing_cfg_file", None) or ""
    group, _, option = missing.rpartition("/")
    options = list(getattr(err, "options", None) or [])
    if not group or not options:
        return ConfigError("config", None, "", _first_line(err))
    return ConfigError(
        group,
        option,
        f"one of {options} ({CONFIG_MODULE}/{group}/<name>.yaml)",
        f"{group}={option}: no such {group}: allowed one of {', '.join(options)} "
        f"({CONFIG_MODULE}/{group}/<name>.yaml)",
    )


_MERGING = re.compile(r"Error merging override (?P<key>[^=]+)=(?P<value>.*)$")


def bad_value(err: Exception) -> ConfigError:
    """``grid.flush_on_yield=[maybe]``: the key, the value as typed, the type allowed."""
    m = _MERGING.match(_first_line(err))
    reason = _first_line(err.__cause__) if err.__cause__ is not None else ""
    if m is None:
        message = _first_line(err) + (f": {reason}" if reason else "")
        return ConfigError("config", None, "", message)
    key, value = m["key"].lstrip("+~"), m["value"]
    allowed = describe(schema_type(key))
    why = f" ({reason.rstrip('.')})" if reason else ""
    return ConfigError(key, value, allowed, f"{key}={value} is invalid: allowed {allowed}{why}")


def schema_type(key: str) -> Any:
    """The schema's type of a dotted key (``grid.vcpus``), or ``Any`` if it has none."""
    node: Any = SweepConfig
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        if not dataclasses.is_dataclass(node):
            return Any
        hints = typing.get_type_hints(node)
        if part not in hints:
            return Any
        node = hints[part]
    return node


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def describe(tp: Any, plural: bool = False) -> str:
    """What a value of schema type ``tp`` may be, in words."""
    names = _PLURALS if plural else _NAMES
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in names:
        return names[tp]
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(describe(a, plural) for a in rest)
        return text + (" or null" if len(rest) < len(args) else "")
    if origin is list:
        inner = describe(args[0], plural=True) if args else "values"
        return ("lists of " if plural else "a list of ") + inner
    if origin is dict or tp is dict:
        return "mappings" if plural else "a mapping"
    if dataclasses.is_dataclass(tp):
        keys = [f.name for f in dataclasses.fields(tp)]
        return f"a group with keys {keys}"
    return "values" if plural else "a value"
