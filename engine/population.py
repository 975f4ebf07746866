"""Which leaf SPTEs are present, accessed and dirty, and which huge mappings
are split: drawn from the seed alone.

Both engines read the guest through this module, so they see the same table.
The unit of the draw is a *leaf run*: the entries of one table at level L
(1 = 4K, 2 = 2M, 3 = 1G) that one memslot maps with level-L leaves by the
mapping-level rule, ``[lo, hi)`` of the table's 512 (a whole table but at a
slot's edges).  A counter-based generator is keyed by ``(seed, stream,
index)``, the index being the run's key (:func:`run_key`: the table index,
salted by slot and level; Part I's guest keys each leaf table by its index):

1. per run, the counts ``present ~ Bin(entries, populated_ratio)``,
   ``accessed ~ Bin(present, accessed_ratio)`` and
   ``dirty ~ Bin(accessed, dirty_ratio / accessed_ratio)`` (the run's slot's
   ratios), each by inverting the binomial CDF at one keyed uniform;
2. per entry, a keyed permutation of the table's 512 entries, the *rank
   map* ``(mul * j + add) mod 512``: the run's entries with the smallest
   values are present (then accessed, then dirty), so an entry is present
   when its value is below the run's threshold (the count itself for a
   whole-table run).  The rank of any one entry costs O(1), and prefix
   counts come from a small table, so the fast engine never reads a table
   entry by entry.

Splits (``split_ratio``): each huge mapping (a 2M or 1G leaf by the rule) is
split to 4K with the slot's ``split_ratio``, keyed by seed, level and entry.
A split entry keeps its place in its run's draw and is then mapped by a
child table instead, so each remaining entry is still present with
probability ``populated_ratio``; the 4K pages under it are runs of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .geometry import PAGE_SHIFT, PTES_PER_TABLE, SPTE_LEVEL_BITS
from .scenario import LEVEL_BY_NAME, Scenario

# Entry codes of a leaf table.
NONPRESENT = 0
PRESENT = 1
ACCESSED = 3  # present | accessed
DIRTY = 7  # present | accessed | dirty

_STREAM_PRESENT = 1
_STREAM_ACCESSED = 2
_STREAM_DIRTY = 3
_STREAM_ORDER = 4
_STREAM_SPLIT = 5


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, stream: int) -> np.uint64:
    """The key of one stream of one seed: keyed_bits(seed, stream, i) is
    splitmix64(splitmix64(i ^ key))."""
    key = _splitmix64(np.array([seed], dtype=np.uint64))
    return _splitmix64(key ^ np.array([stream << 56], dtype=np.uint64))[0]


def keyed_bits(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """64 random bits per index, a pure function of (seed, stream, index)."""
    index = np.asarray(index, dtype=np.uint64)
    return _splitmix64(_splitmix64(index ^ stream_key(seed, stream)))


def keyed_uniform(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) with 53 random bits, keyed like :func:`keyed_bits`."""
    return (keyed_bits(seed, stream, index) >> np.uint64(11)).astype(np.float64) * (2.0**-53)


# log(k!) for k = 0..512: a table holds at most 512 leaves.
_LOG_FACTORIAL = np.array([math.lgamma(k + 1) for k in range(PTES_PER_TABLE + 1)])


@lru_cache(maxsize=4096)
def _binomial_cdf(n: int, q: float) -> np.ndarray:
    """P(Bin(n, q) <= k) for k = 0..n, summed from log-space terms (numpy
    only: importing scipy.stats costs every sweep worker 1.5 s)."""
    k = np.arange(n + 1)
    log_pmf = (
        _LOG_FACTORIAL[n]
        - _LOG_FACTORIAL[k]
        - _LOG_FACTORIAL[n - k]
        + k * math.log(q)
        + (n - k) * math.log1p(-q)
    )
    cdf = np.cumsum(np.exp(log_pmf))
    cdf[-1] = 1.0
    return cdf


GUIDE_BITS = 16  # the guide table's buckets: uniforms sharing their top 16 bits
GUIDE_MIN = 1 << 13  # uniforms drawn at once from one CDF before a guide pays off


@lru_cache(maxsize=64)
def _binomial_guide(n: int, q: float) -> np.ndarray:
    """Per bucket ``b`` of uniforms in ``[b, b + 1) * 2^-16``: the inverse CDF
    if every uniform of the bucket has the same one, else -1.  A lookup
    instead of a binary search; at most n + 1 of 65,536 buckets straddle a
    step of the CDF, and only uniforms in those are searched."""
    cdf = _binomial_cdf(n, q)
    buckets = np.arange(1 << GUIDE_BITS, dtype=np.int64)
    # The smallest and largest 53-bit uniforms of each bucket, both exact floats.
    low = (buckets << (53 - GUIDE_BITS)).astype(np.float64) * 2.0**-53
    high = (((buckets + 1) << (53 - GUIDE_BITS)) - 1).astype(np.float64) * 2.0**-53
    k_low = np.searchsorted(cdf, low, side="right")
    k_high = np.searchsorted(cdf, high, side="right")
    return np.where(k_low == k_high, k_low, -1).astype(np.int16)


def _inverse_cdf(u: np.ndarray, n: int, q: float) -> np.ndarray:
    """searchsorted(cdf, u, "right") for uniforms u with 53 random bits."""
    cdf = _binomial_cdf(n, q)
    if len(u) < GUIDE_MIN:
        return np.searchsorted(cdf, u, side="right")
    k = _binomial_guide(n, q).take((u * float(1 << GUIDE_BITS)).astype(np.int64))
    k = k.astype(np.int64)
    straddle = np.flatnonzero(k < 0)
    k[straddle] = np.searchsorted(cdf, u[straddle], side="right")
    return k


def binomial_from_uniform(u: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """Inverse binomial CDF: the smallest k with P(Bin(n, q) <= k) > u."""
    n = np.asarray(n, dtype=np.int64)
    if q <= 0.0:
        return np.zeros_like(n)
    if q >= 1.0:
        return n.copy()
    out = np.empty_like(n)
    if len(n) == 0:
        return out
    values = np.flatnonzero(np.bincount(n))
    if len(values) == 1:  # a fully populated guest: one CDF for every table
        return np.minimum(_inverse_cdf(u, int(values[0]), float(q)), n)
    order = np.argsort(n, kind="stable")
    bounds = np.searchsorted(n[order], values, side="left")
    for nv, lo, hi in zip(values, bounds, np.r_[bounds[1:], len(n)], strict=True):
        idx = order[lo:hi]
        out[idx] = np.minimum(_inverse_cdf(u[idx], int(nv), float(q)), nv)
    return out


@dataclass(frozen=True)
class RunCounts:
    """Per leaf run: the entries it spans, and how many of them the draw
    makes present, accessed and dirty (before split entries are carved out)."""

    entries: np.ndarray
    present: np.ndarray
    accessed: np.ndarray
    dirty: np.ndarray


def run_key(
    tables: np.ndarray | int, slot: np.ndarray | int, level: int, backing_level
) -> np.ndarray:
    """The draw's key of a leaf run: the table index, salted by the slot and by
    how far below the slot's backing page size the table sits.  Part I's
    guest (slot 0, leaves at its page size) keys each table by its index."""
    salt = (np.asarray(slot, dtype=np.uint64) << np.uint64(SLOT_SALT_SHIFT)) | (
        np.asarray(np.asarray(backing_level) - level, dtype=np.uint64)
        << np.uint64(LEVEL_SALT_SHIFT)
    )
    return np.asarray(tables, dtype=np.uint64) ^ salt


# Salt bits above any table index (a table index is below 2^40 / 512 = 2^31).
SLOT_SALT_SHIFT = 44
LEVEL_SALT_SHIFT = 60


def run_counts(
    seed: int, keys: np.ndarray, entries: np.ndarray, ratios: tuple[float, float, float]
) -> RunCounts:
    """Counts of the runs with these ``keys``, spanning ``entries`` entries
    each, under one slot's (populated, accessed, dirty) ratios.  A run's
    counts depend on its key and the seed only, not on the other runs asked
    for: ``present ~ Bin(entries, populated)``, ``accessed ~ Bin(present,
    accessed)``, ``dirty ~ Bin(accessed, dirty / accessed)``."""
    keys = np.asarray(keys, dtype=np.uint64)
    entries = np.asarray(entries, dtype=np.int64)
    p, a, d = ratios

    def draw(stream: int, n: np.ndarray, q: float) -> np.ndarray:
        if q <= 0.0 or q >= 1.0:  # no draw needed: skip the hashing
            return binomial_from_uniform(np.empty(0), n, q)
        return binomial_from_uniform(keyed_uniform(seed, stream, keys), n, q)

    present = draw(_STREAM_PRESENT, entries, p)
    accessed = draw(_STREAM_ACCESSED, present, a)
    dirty = draw(_STREAM_DIRTY, accessed, d / a if a > 0 else 0.0)
    return RunCounts(entries, present, accessed, dirty)


def split_mask(seed: int, level: int, entries: np.ndarray, split_ratio: float) -> np.ndarray:
    """Which huge mappings at ``level`` (global entry indices, i.e. GFN /
    pages per SPTE) are split to 4K: each with probability ``split_ratio``,
    keyed by the seed, the level and the entry alone."""
    entries = np.asarray(entries, dtype=np.int64)
    if split_ratio <= 0.0:
        return np.zeros(len(entries), dtype=bool)
    if split_ratio >= 1.0:
        return np.ones(len(entries), dtype=bool)
    index = entries.astype(np.uint64) | np.uint64(level << 56)
    return keyed_uniform(seed, _STREAM_SPLIT, index) < split_ratio


# Odd multipliers of the per-table rank map, spread over (0, 512).  Sixteen
# keep the prefix-count table small (16 x 513 x 513 int16, 8 MiB).
RANK_MULTIPLIERS = np.array(
    [317, 195, 443, 71, 379, 133, 253, 491, 29, 167, 409, 101, 283, 223, 347, 457], dtype=np.int64
)


def rank_map_stream_key(seed: int) -> np.uint64:
    """stream_key() of the rank maps' stream (rank_map_key without numpy)."""
    return stream_key(seed, _STREAM_ORDER)


def rank_map_key(seed: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per run key, the index into RANK_MULTIPLIERS and the offset of its
    rank map ``(mul * j + add) mod 512``."""
    k = keyed_bits(seed, _STREAM_ORDER, np.asarray(keys, dtype=np.uint64))
    k = (k >> np.uint64(32)).astype(np.int64)
    return k & 15, (k >> 4) & (PTES_PER_TABLE - 1)


def rank_values(seed: int, key: int, j: np.ndarray) -> np.ndarray:
    """The rank map of the run keyed ``key`` at table entries ``j``: a keyed
    permutation of the 512 entries, ``(mul * j + add) mod 512``."""
    midx, add = rank_map_key(seed, np.array([key], dtype=np.uint64))
    return (RANK_MULTIPLIERS[midx[0]] * np.asarray(j, dtype=np.int64) + add[0]) % PTES_PER_TABLE


def run_thresholds(seed: int, key: int, lo: int, hi: int, counts) -> tuple[int, ...]:
    """For a run over entries [lo, hi) of its table and counts (present,
    accessed, dirty): the rank-map values below which an entry is present,
    accessed, dirty.  The ``c`` entries of the run with the smallest rank
    values are the ones counted, so the threshold is the c-th smallest
    value (512 when all are).  For a full run the threshold is the count
    itself, and the rank of an entry is its rank-map value."""
    values = np.sort(rank_values(seed, key, np.arange(lo, hi)))
    return tuple(int(values[c]) if c < hi - lo else PTES_PER_TABLE for c in counts)


def codes_below(values: np.ndarray, present: int, accessed: int, dirty: int) -> np.ndarray:
    """Entry codes for rank-map ``values`` under thresholds present >=
    accessed >= dirty (a dirty leaf is accessed, an accessed one present)."""
    codes = np.zeros(values.shape, dtype=np.uint8)
    codes[values < present] = PRESENT
    codes[values < accessed] = ACCESSED
    codes[values < dirty] = DIRTY
    return codes


def run_codes(seed: int, key: int, lo: int, hi: int, counts) -> np.ndarray:
    """Entry codes (NONPRESENT/PRESENT/ACCESSED/DIRTY) of a run over entries
    [lo, hi) of its table with counts (present, accessed, dirty)."""
    thresholds = run_thresholds(seed, key, lo, hi, counts)
    return codes_below(rank_values(seed, key, np.arange(lo, hi)), *thresholds)


@lru_cache(maxsize=1)
def rank_counts() -> np.ndarray:
    """C[m, j, s] = #{i < j : (RANK_MULTIPLIERS[m] * i) mod 512 < s}."""
    n = PTES_PER_TABLE
    u = (RANK_MULTIPLIERS[:, None] * np.arange(n)[None, :]) % n
    onehot = np.zeros((len(RANK_MULTIPLIERS), n + 1, n + 1), dtype=np.int16)
    m_idx = np.repeat(np.arange(len(RANK_MULTIPLIERS)), n)
    onehot[m_idx, np.tile(np.arange(1, n + 1), len(RANK_MULTIPLIERS)), u.ravel() + 1] = 1
    return onehot.cumsum(axis=1, dtype=np.int16).cumsum(axis=2, dtype=np.int16)


# -- Part I's guest: one slot from GPA 0, leaves at its page size ------------------


def flat_leaf_tables(scenario: Scenario) -> tuple[int, int]:
    """(leaf level, leaf count) of a flat scenario's guest."""
    if scenario.layout != "flat" or scenario.split_ratio:
        raise ValueError("a flat guest without splits has one leaf level")
    level = LEVEL_BY_NAME[scenario.page_size]
    return level, scenario.guest_memory >> (PAGE_SHIFT + SPTE_LEVEL_BITS * (level - 1))


def leaf_table_counts(scenario: Scenario, tables: np.ndarray | None = None) -> RunCounts:
    """Counts of the leaf tables ``tables`` (all of them when None) of a flat
    guest: table ``t`` is one run over its first ``entries`` entries (512
    but for the last), keyed by ``t``."""
    _, pages = flat_leaf_tables(scenario)
    n_tables = -(-pages // PTES_PER_TABLE)
    if tables is None:
        tables = np.arange(n_tables, dtype=np.int64)
    tables = np.asarray(tables, dtype=np.int64)
    last = pages - PTES_PER_TABLE * (n_tables - 1)
    entries = np.where(tables == n_tables - 1, last, PTES_PER_TABLE).astype(np.int64)
    ratios = (scenario.populated_ratio, scenario.accessed_ratio, scenario.dirty_ratio)
    return run_counts(scenario.seed, tables, entries, ratios)


def leaf_table_entries(scenario: Scenario, table: int, counts: RunCounts, i: int = 0) -> np.ndarray:
    """Entry codes of leaf table ``table`` of a flat guest, whose counts are
    ``counts`` row ``i``; 512 codes, padded non-present."""
    n = int(counts.entries[i])
    codes = np.zeros(PTES_PER_TABLE, dtype=np.uint8)
    c = (int(counts.present[i]), int(counts.accessed[i]), int(counts.dirty[i]))
    codes[:n] = run_codes(scenario.seed, table, 0, n, c)
    return codes
