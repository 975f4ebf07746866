"""Errors and memory sizes shared by every part of a scenario's validation."""

from __future__ import annotations

import math
import re
from typing import Any

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


def parse_memory(value: Any, field_name: str = "guest_memory", allow_zero: bool = False) -> int:
    """Parse a memory size: an int of bytes or a string like ``"512GiB"``
    (0 only when ``allow_zero``: a GPA may be 0, a size may not).

    Binary units only (KiB, MiB, GiB, TiB, PiB, or K/M/G/T/P): "12TB" is
    refused because a decimal terabyte is not a whole number of pages.
    """
    allowed = ("a byte count >= 0" if allow_zero else "a positive byte count") + (
        " or an integer with a unit KiB/MiB/GiB/TiB/PiB (e.g. '512GiB')"
    )
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
    if n < 0 or (n == 0 and not allow_zero):
        raise ScenarioError(field_name, value, allowed)
    return n


def format_memory(n: int) -> str:
    """Inverse of :func:`parse_memory` for display: 549755813888 -> '512GiB'."""
    if n == 0:
        return "0"
    for unit in ("PiB", "TiB", "GiB", "MiB", "KiB"):
        size = _MEMORY_UNITS[unit]
        if n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


__all__ = ["ScenarioError", "format_memory", "parse_memory"]
