"""Memslots: the GPA ranges of guest RAM, and the layouts that derive them.

A memslot (``struct kvm_memory_slot``) is a GPA range ``[gpa, gpa + size)``
of guest RAM backed by one page size, with its own population ratios.  A
layout preset derives the slots from the VM's RAM size (spec section 9):

- ``flat``: one slot ``[0, M)`` (Part I's guest);
- ``q35``: QEMU's q35 machine (``pc_q35_init()`` in hw/i386/pc_q35.c): RAM
  below 4 GiB is ``lowmem`` = 2 GiB when M >= 2.75 GiB (0xb0000000), else
  2.75 GiB; ``below = min(M, lowmem)`` sits at GPA 0 without the VGA window
  and BIOS area ``[640 KiB, 1 MiB)``, and ``above = M - below`` at 4 GiB.

Slot fields left as None take the scenario's value (its page size, ratios
and split ratio), so a list of slots needs to say only what differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Any

from .geometry import PAGE_SHIFT
from .units import format_memory

PAGE_BYTES = 1 << PAGE_SHIFT
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

# q35 (hw/i386/pc_q35.c): the split of RAM below and above 4 GiB.
Q35_SPLIT_THRESHOLD = 0xB0000000  # 2.75 GiB: from here on lowmem is 2 GiB
Q35_LOWMEM_LARGE = 0x80000000  # 2 GiB
Q35_LOWMEM_SMALL = 0xB0000000  # 2.75 GiB
Q35_HOLE = (640 * KIB, 1 * MIB)  # VGA window and BIOS/option ROM area: no RAM slot here
Q35_HIGH_BASE = 4 * GIB

# KVM_USER_MEM_SLOTS on x86: SHRT_MAX minus the 3 private slots.
MAX_MEMSLOTS = 32764

MEMSLOT_RATIOS = ("populated_ratio", "accessed_ratio", "dirty_ratio", "split_ratio")


@dataclass(frozen=True, order=True)
class Memslot:
    """One memslot: ``[gpa, gpa + size)`` of guest RAM (bytes, or strings like
    ``"2GiB"``), backed by ``page_size`` pages, with its own ratios.

    Checked and resolved by the Scenario that holds it (errors name
    ``memslots[i].<field>``); a field left None takes the scenario's value.
    """

    gpa: int | str
    size: int | str
    page_size: str | None = None
    populated_ratio: float | None = None
    accessed_ratio: float | None = None
    dirty_ratio: float | None = None
    split_ratio: float | None = None

    @property
    def end(self) -> int:
        return self.gpa + self.size

    @property
    def base_gfn(self) -> int:
        return self.gpa >> PAGE_SHIFT

    @property
    def npages(self) -> int:
        return self.size >> PAGE_SHIFT

    def to_dict(self) -> dict[str, Any]:
        """The slot as a mapping that Memslot(**...) accepts, sizes as text."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("gpa", "size") and isinstance(value, int):
                value = format_memory(value)
            out[f.name] = value
        return out


MEMSLOT_FIELDS = tuple(f.name for f in fields(Memslot))


def memslots_text(slots: tuple[Memslot, ...] | None) -> str | None:
    """One stable text form of a slot list (canonical JSON, sizes like
    '2GiB', slots by GPA): what the Parquet's ``memslots`` column holds.
    It is valid YAML too, so it can be pasted back into a grid."""
    if slots is None:
        return None
    return json.dumps([s.to_dict() for s in slots], separators=(",", ":"))


def flat_slots(memory: int, template: Memslot) -> tuple[Memslot, ...]:
    """layout=flat: one slot [0, M)."""
    return (replace(template, gpa=0, size=memory),)


def q35_split(memory: int) -> tuple[int, int]:
    """(below, above): RAM below 4 GiB and above it, as pc_q35_init() splits it."""
    lowmem = Q35_LOWMEM_LARGE if memory >= Q35_SPLIT_THRESHOLD else Q35_LOWMEM_SMALL
    below = min(memory, lowmem)
    return below, memory - below


def q35_slots(memory: int, template: Memslot) -> tuple[Memslot, ...]:
    """layout=q35: [0, 640KiB), [1MiB, below) and, when above > 0,
    [4GiB, 4GiB + above).  ``memory`` must exceed 1 MiB."""
    below, above = q35_split(memory)
    hole_lo, hole_hi = Q35_HOLE
    slots = [
        replace(template, gpa=0, size=hole_lo),
        replace(template, gpa=hole_hi, size=below - hole_hi),
    ]
    if above:
        slots.append(replace(template, gpa=Q35_HIGH_BASE, size=above))
    return tuple(slots)


__all__ = [
    "MAX_MEMSLOTS",
    "MEMSLOT_FIELDS",
    "MEMSLOT_RATIOS",
    "Memslot",
    "PAGE_BYTES",
    "Q35_HOLE",
    "flat_slots",
    "memslots_text",
    "q35_slots",
    "q35_split",
]
