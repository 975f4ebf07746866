"""Page-table geometry, defined once for every engine (spec section 1).

Names follow arch/x86/kvm/mmu (spte.h, tdp_iter.h, kvm_host.h): a table is
SPTE_ENT_PER_PAGE SPTEs of 8 bytes in one 4 KiB page, each level resolves
SPTE_LEVEL_BITS of the GFN.  Level 1 = 4K, 2 = 2M, 3 = 1G, 4 = 512G, 5 = 256T.

A *table at level L* holds level-L SPTEs; its index is its base GFN divided
by :func:`table_span` (``L``).  So the table under entry ``i`` of table ``t``
at level ``L`` is table ``t * 512 + i`` at level ``L - 1``: the parent of
table ``t`` at level ``L - 1`` is ``t >> 9``, its entry ``t & 511``.
"""

from __future__ import annotations

PAGE_SHIFT = 12
SPTE_LEVEL_BITS = 9
PTES_PER_TABLE = 1 << SPTE_LEVEL_BITS  # SPTE_ENT_PER_PAGE
TABLE_BYTES = 4096


def pages_per_spte(level: int) -> int:
    """KVM_PAGES_PER_HPAGE(level): 4K GFNs mapped by one SPTE at ``level``."""
    return 1 << (SPTE_LEVEL_BITS * (level - 1))


def table_span(level: int) -> int:
    """GFNs covered by one table at ``level`` (its 512 SPTEs)."""
    return 1 << (SPTE_LEVEL_BITS * level)


def level_bytes(level: int) -> int:
    """Bytes of guest memory mapped by one SPTE at ``level``."""
    return pages_per_spte(level) << PAGE_SHIFT


def round_gfn(gfn: int, level: int) -> int:
    """gfn_round_for_level(): the first GFN of the level-``level`` SPTE holding ``gfn``."""
    return gfn & -pages_per_spte(level)


def spte_index(gfn: int, level: int) -> int:
    """SPTE_INDEX(gfn << PAGE_SHIFT, level): the entry of ``gfn`` in its table at ``level``."""
    return (gfn >> (SPTE_LEVEL_BITS * (level - 1))) & (PTES_PER_TABLE - 1)


__all__ = [
    "PAGE_SHIFT",
    "PTES_PER_TABLE",
    "SPTE_LEVEL_BITS",
    "TABLE_BYTES",
    "level_bytes",
    "pages_per_spte",
    "round_gfn",
    "spte_index",
    "table_span",
]
