"""The guest's leaves level by level, from its memslots in closed form.

The mapping-level rule (spec section 9) maps the entries of a slot at level
L (GFN / pages per SPTE) that lie wholly inside the slot, no larger than its
backing page, with level-L leaves, unless the enclosing level-(L+1) range
lies inside too: so per slot and level the leaves form at most two
intervals (the slot's unaligned head and tail), or one.  The seed splits
some huge mappings to 4K (``population.split_mask``); the 4K pages under a
split mapping are whole level-1 tables.  Cut at table boundaries, the
intervals are the *leaf runs* of the population draw: one per table and
slot, a whole table but at a slot's edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import PTES_PER_TABLE, SPTE_LEVEL_BITS, pages_per_spte
from ..memslot import Memslot
from ..population import (
    RANK_MULTIPLIERS,
    rank_map_key,
    run_counts,
    run_key,
    run_thresholds,
    split_mask,
)
from ..scenario import LEVEL_BY_NAME, Scenario
from .arrays import CHUNK, first_of_runs

ENTRIES = PTES_PER_TABLE
LEAF_LEVELS = (1, 2, 3)


def rule_intervals(slot: Memslot, backing: int, level: int) -> list[tuple[int, int]]:
    """The entries at ``level`` that the mapping-level rule maps with
    level-``level`` leaves in ``slot`` (backed by ``backing``-level pages)."""
    if level > backing:
        return []
    start, end = slot.base_gfn, slot.base_gfn + slot.npages
    span = pages_per_spte(level)
    lo, hi = -(-start // span), end // span  # wholly inside the slot
    if lo >= hi or level == backing:
        return [(lo, hi)] if lo < hi else []
    up = pages_per_spte(level + 1)
    inner_lo, inner_hi = -(-start // up) * ENTRIES, (end // up) * ENTRIES  # mapped larger
    if inner_lo >= inner_hi:
        return [(lo, hi)]
    return [(a, b) for a, b in ((lo, inner_lo), (inner_hi, hi)) if a < b]


@dataclass(frozen=True)
class Splits:
    """The split huge mappings at one level: sorted entries and their slots."""

    entries: np.ndarray
    slot: np.ndarray


@dataclass(frozen=True)
class PartialRuns:
    """The runs that do not span their whole table (a slot's edges), by table:
    ``table`` is a position in LeafLevel.tables, [lo, hi) the entries, and
    the thresholds those of population.run_thresholds."""

    table: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    key: np.ndarray  # uint64
    thresholds: np.ndarray  # (n, 3) int64: present, accessed, dirty

    @classmethod
    def none(cls) -> PartialRuns:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z.astype(np.uint64), np.zeros((0, 3), dtype=np.int64))


@dataclass(frozen=True)
class LeafLevel:
    """The leaves of one level: per table holding a run (``tables``, sorted),
    its slot, the counts drawn for it (summed over its runs; for a table of
    one whole-table run they are its thresholds) and what it holds once the
    split entries are carved out (``held``).  Counts are int16 (at most 512):
    a 16 TiB guest has 8M level-1 tables."""

    level: int
    tables: np.ndarray
    slot: np.ndarray  # int16, the slot of the table's first run
    drawn: tuple[np.ndarray, np.ndarray, np.ndarray]
    held: tuple[np.ndarray, np.ndarray, np.ndarray]
    partial: PartialRuns
    splits: Splits  # split mappings at this level
    split_flags: np.ndarray  # (n, 3) bool: present, accessed, dirty had the entry stayed a leaf

    @property
    def present(self) -> int:
        return int(self.held[0].sum(dtype=np.int64))


def _splits(scenario: Scenario, level: int) -> Splits:
    entries, slots = [], []
    for s, slot in enumerate(scenario.slots):
        if not slot.split_ratio:
            continue
        for lo, hi in rule_intervals(slot, LEVEL_BY_NAME[slot.page_size], level):
            for a in range(lo, hi, CHUNK * 16):
                e = np.arange(a, min(hi, a + CHUNK * 16), dtype=np.int64)
                e = e[split_mask(scenario.seed, level, e, slot.split_ratio)]
                entries.append(e)
                slots.append(np.full(len(e), s, dtype=np.int16))
    if not entries:
        return Splits(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16))
    return Splits(np.concatenate(entries), np.concatenate(slots))


def _runs(scenario: Scenario, level: int, splits: dict[int, Splits]):
    """The runs of one level, sorted by (table, first entry): table, slot, lo, hi."""
    parts = []
    for s, slot in enumerate(scenario.slots):
        for lo, hi in rule_intervals(slot, LEVEL_BY_NAME[slot.page_size], level):
            t0, t1 = lo // ENTRIES, (hi - 1) // ENTRIES
            t = np.arange(t0, t1 + 1, dtype=np.int64)
            first = np.zeros(len(t), dtype=np.int16)
            last = np.full(len(t), ENTRIES, dtype=np.int16)
            first[0], last[-1] = lo - t0 * ENTRIES, hi - t1 * ENTRIES
            parts.append((t, np.full(len(t), s, dtype=np.int16), first, last))
    if level == 1:  # the 4K pages under split mappings: whole tables
        for up, sp in splits.items():
            per = pages_per_spte(up) // ENTRIES  # level-1 tables under one mapping
            t = (sp.entries[:, None] * per + np.arange(per)[None, :]).ravel()
            n = len(t)
            parts.append(
                (
                    t,
                    np.repeat(sp.slot, per),
                    np.zeros(n, dtype=np.int16),
                    np.full(n, ENTRIES, dtype=np.int16),
                )
            )
    if not parts:
        z = np.zeros(0, dtype=np.int64)
        return z, z.astype(np.int16), z.astype(np.int16), z.astype(np.int16)
    if len(parts) == 1:
        return parts[0]
    # Each part is in order; the slots' own parts come by GPA, the split
    # ones (whole tables under split mappings) fall in between.
    in_order = all(
        int(a[0][-1]) * ENTRIES + int(a[2][-1]) < int(b[0][0]) * ENTRIES + int(b[2][0])
        for a, b in zip(parts, parts[1:], strict=False)
        if len(a[0]) and len(b[0])
    )
    table, slot, lo, hi = (np.concatenate(x) for x in zip(*parts, strict=True))
    if not in_order:
        order = np.argsort(table * ENTRIES + lo, kind="stable")
        table, slot, lo, hi = table[order], slot[order], lo[order], hi[order]
    return table, slot, lo, hi


def _draw(scenario: Scenario, level: int, table, slot, lo, hi):
    """Counts of the runs, int16, a chunk at a time (per slot: its ratios)."""
    n = len(table)
    out = tuple(np.empty(n, dtype=np.int16) for _ in range(3))
    bounds = np.flatnonzero(np.diff(slot)) + 1 if n else np.zeros(0, dtype=np.int64)
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, n], strict=True):
        if a == b:
            continue
        s = int(slot[a])
        memslot = scenario.slots[s]
        ratios = (memslot.populated_ratio, memslot.accessed_ratio, memslot.dirty_ratio)
        backing = LEVEL_BY_NAME[memslot.page_size]
        for c in range(a, b, CHUNK):
            d = min(b, c + CHUNK)
            keys = run_key(table[c:d], s, level, backing)
            got = run_counts(scenario.seed, keys, (hi[c:d] - lo[c:d]).astype(np.int64), ratios)
            for o, v in zip(out, (got.present, got.accessed, got.dirty), strict=True):
                o[c:d] = v
    return out


def leaf_level(scenario: Scenario, level: int, splits: dict[int, Splits]) -> LeafLevel:
    """The leaves at ``level``; ``splits`` holds the split mappings at the
    levels above 1 (those at ``level`` are carved out of its runs)."""
    table, slot, lo, hi = _runs(scenario, level, splits)
    counts = _draw(scenario, level, table, slot, lo, hi)
    here = splits.get(level)
    partial = np.flatnonzero((lo != 0) | (hi != ENTRIES))
    partial_keys = np.zeros(len(partial), dtype=np.uint64)
    thresholds = np.zeros((len(partial), 3), dtype=np.int64)
    for i, r in enumerate(partial):
        s = int(slot[r])
        key = int(run_key(int(table[r]), s, level, LEVEL_BY_NAME[scenario.slots[s].page_size]))
        partial_keys[i] = key
        c = tuple(int(x[r]) for x in counts)
        thresholds[i] = run_thresholds(scenario.seed, key, int(lo[r]), int(hi[r]), c)

    held = counts
    flags = np.zeros((0, 3), dtype=bool)
    if here is not None and len(here.entries):
        # Each split entry's run, and whether it would have been present,
        # accessed, dirty: its rank-map value against the run's thresholds.
        start = table * ENTRIES + lo
        run = np.searchsorted(start, here.entries, side="right") - 1
        keys = run_key(table[run], slot[run], level, _backing(scenario, slot[run]))
        midx, add = rank_map_key(scenario.seed, keys)
        value = (RANK_MULTIPLIERS[midx] * (here.entries & (ENTRIES - 1)) + add) % ENTRIES
        th = np.stack([c[run].astype(np.int64) for c in counts], axis=1)
        if len(partial):
            at = np.searchsorted(partial, run)
            is_partial = (at < len(partial)) & (partial[np.minimum(at, len(partial) - 1)] == run)
            th[is_partial] = thresholds[at[is_partial]]
        flags = value[:, None] < th
        held = tuple(
            (c - np.bincount(run, weights=flags[:, k], minlength=len(table))).astype(np.int16)
            for k, c in enumerate(counts)
        )

    # Runs to tables: a table holds more than one run only where two slots
    # meet, so the few runs after the first of their table are added in.
    new_table = np.ones(len(table), dtype=bool)
    if len(table) > 1:
        new_table[1:] = table[1:] != table[:-1]
    if new_table.all():
        tables, position = table, partial
    else:
        firsts, extra = np.flatnonzero(new_table), np.flatnonzero(~new_table)
        into = np.searchsorted(firsts, extra, side="right") - 1

        def merged(c: np.ndarray) -> np.ndarray:
            out = c[firsts]
            np.add.at(out, into, c[extra])
            return out

        tables, slot = table[firsts], slot[firsts]
        same = held is counts  # no split entry carved out
        counts = tuple(merged(c) for c in counts)
        held = counts if same else tuple(merged(c) for c in held)
        position = np.searchsorted(firsts, partial, side="right") - 1
    runs = PartialRuns(
        position.astype(np.int64),
        lo[partial].astype(np.int64),
        hi[partial].astype(np.int64),
        partial_keys,
        thresholds,
    )
    empty = Splits(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16))
    return LeafLevel(level, tables, slot, counts, held, runs, here or empty, flags)


def _backing(scenario: Scenario, slot: np.ndarray) -> np.ndarray:
    levels = np.array([LEVEL_BY_NAME[s.page_size] for s in scenario.slots], dtype=np.int64)
    return levels[slot.astype(np.int64)]


def leaf_levels(scenario: Scenario) -> dict[int, LeafLevel]:
    """Every level's leaves, from the slots: splits first (they add level-1 runs)."""
    splits = {level: _splits(scenario, level) for level in (3, 2)}
    splits = {level: sp for level, sp in splits.items() if len(sp.entries)}
    return {level: leaf_level(scenario, level, splits) for level in LEAF_LEVELS}


def parent_tables(tables: np.ndarray) -> np.ndarray:
    """The tables one level up that hold these (sorted) tables."""
    up = tables >> SPTE_LEVEL_BITS
    return up[first_of_runs(up)]


__all__ = ["LEAF_LEVELS", "LeafLevel", "PartialRuns", "Splits", "leaf_levels", "rule_intervals"]
