"""Which leaf SPTEs are present, accessed and dirty: drawn from the seed alone.

Both engines read the guest through this module, so they see the same table.
The draw is organised per *leaf table* (the 512-entry table that holds the
guest's leaves: level 1 for 4K pages, 2 for 2M, 3 for 1G) with a
counter-based generator keyed by ``(seed, stream, index)``:

1. per leaf table, the counts ``present ~ Bin(entries, populated_ratio)``,
   ``accessed ~ Bin(present, accessed_ratio)`` and
   ``dirty ~ Bin(accessed, dirty_ratio / accessed_ratio)``, each by inverting
   the binomial CDF at one keyed uniform;
2. per entry, a rank from a keyed permutation of the table's entries: the
   entries ranked below ``dirty`` are dirty (and accessed, present), those
   below ``accessed`` accessed, those below ``present`` present.  For a full
   table the permutation is a keyed bijection of 9-bit indices, so the rank
   of any one entry costs O(1) and the fast engine can read single entries.

So each present leaf is accessed with probability ``accessed_ratio`` and dirty
with probability ``dirty_ratio`` (a dirty leaf is always accessed), and the
counts of any table can be drawn without drawing its entries: the fast engine
reads entries only for tables where a ``tick`` yield falls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .geometry import PTES_PER_TABLE
from .scenario import Scenario

# Entry codes of a leaf table.
NONPRESENT = 0
PRESENT = 1
ACCESSED = 3  # present | accessed
DIRTY = 7  # present | accessed | dirty

_STREAM_PRESENT = 1
_STREAM_ACCESSED = 2
_STREAM_DIRTY = 3
_STREAM_ORDER = 4


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
class LeafTableCounts:
    """Per leaf table (index ``t`` covers leaves ``[512 t, 512 t + entries)``)."""

    entries: np.ndarray  # guest leaves the table maps (512 but for the last)
    present: np.ndarray
    accessed: np.ndarray
    dirty: np.ndarray


def leaf_table_count(scenario: Scenario) -> int:
    return -(-scenario.guest_pages // PTES_PER_TABLE)


def leaf_table_counts(scenario: Scenario, tables: np.ndarray | None = None) -> LeafTableCounts:
    """Counts of the leaf tables ``tables`` (all of them when None).

    The counts of a table depend on its index and the seed only, not on
    which other tables are asked for.
    """
    n_tables = leaf_table_count(scenario)
    if tables is None:
        tables = np.arange(n_tables, dtype=np.int64)
    tables = np.asarray(tables, dtype=np.int64)
    last = scenario.guest_pages - PTES_PER_TABLE * (n_tables - 1)
    entries = np.where(tables == n_tables - 1, last, PTES_PER_TABLE).astype(np.int64)
    s = scenario.seed
    p, a, d = scenario.populated_ratio, scenario.accessed_ratio, scenario.dirty_ratio

    def draw(stream: int, n: np.ndarray, q: float) -> np.ndarray:
        if q <= 0.0 or q >= 1.0:  # no draw needed: skip the hashing
            return binomial_from_uniform(np.empty(0), n, q)
        return binomial_from_uniform(keyed_uniform(s, stream, tables), n, q)

    present = draw(_STREAM_PRESENT, entries, p)
    accessed = draw(_STREAM_ACCESSED, present, a)
    dirty = draw(_STREAM_DIRTY, accessed, d / a if a > 0 else 0.0)
    return LeafTableCounts(entries, present, accessed, dirty)


# Odd multipliers of the per-table rank map, spread over (0, 512).  Sixteen
# keep the prefix-count table small (16 x 513 x 513 int16, 8 MiB).
RANK_MULTIPLIERS = np.array(
    [317, 195, 443, 71, 379, 133, 253, 491, 29, 167, 409, 101, 283, 223, 347, 457], dtype=np.int64
)


def rank_map_stream_key(seed: int) -> np.uint64:
    """stream_key() of the rank maps' stream (rank_map_key without numpy)."""
    return stream_key(seed, _STREAM_ORDER)


def rank_map_key(seed: int, tables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per leaf table, the index into RANK_MULTIPLIERS and the offset of its
    rank map ``(mul * j + add) mod 512``."""
    k = keyed_bits(seed, _STREAM_ORDER, np.asarray(tables, dtype=np.uint64))
    k = (k >> np.uint64(32)).astype(np.int64)
    return k & 15, (k >> 4) & (PTES_PER_TABLE - 1)


def leaf_entry_ranks(seed: int, table: int, n_entries: int, j: np.ndarray) -> np.ndarray:
    """Rank (0 = first to be present/accessed/dirty) of entries ``j`` of leaf
    table ``table`` which maps ``n_entries`` guest leaves.

    A full table ranks entry j at ``(mul * j + add) mod 512`` (``mul`` odd,
    both keyed by seed and table): a permutation whose prefix counts come
    from a small table (:func:`rank_counts`), so the fast engine can
    find where a yield falls in a table without reading its entries.
    """
    midx, add = rank_map_key(seed, np.array([table]))
    perm = (RANK_MULTIPLIERS[midx[0]] * np.arange(PTES_PER_TABLE) + add[0]) % PTES_PER_TABLE
    if n_entries == PTES_PER_TABLE:
        return perm[np.asarray(j)]
    # A partial table (the guest's last): rank among the entries that exist.
    ranks = np.empty(n_entries, dtype=np.int64)
    ranks[np.argsort(perm[:n_entries], kind="stable")] = np.arange(n_entries)
    return ranks[np.asarray(j)]


@lru_cache(maxsize=1)
def rank_counts() -> np.ndarray:
    """C[m, j, s] = #{i < j : (RANK_MULTIPLIERS[m] * i) mod 512 < s}."""
    n = PTES_PER_TABLE
    u = (RANK_MULTIPLIERS[:, None] * np.arange(n)[None, :]) % n
    onehot = np.zeros((len(RANK_MULTIPLIERS), n + 1, n + 1), dtype=np.int16)
    m_idx = np.repeat(np.arange(len(RANK_MULTIPLIERS)), n)
    onehot[m_idx, np.tile(np.arange(1, n + 1), len(RANK_MULTIPLIERS)), u.ravel() + 1] = 1
    return onehot.cumsum(axis=1, dtype=np.int16).cumsum(axis=2, dtype=np.int16)


def codes_from_ranks(ranks: np.ndarray, present: int, accessed: int, dirty: int) -> np.ndarray:
    codes = np.zeros(ranks.shape, dtype=np.uint8)
    codes[ranks < present] = PRESENT
    codes[ranks < accessed] = ACCESSED
    codes[ranks < dirty] = DIRTY
    return codes


def leaf_table_entries(
    scenario: Scenario, table: int, counts: LeafTableCounts, i: int = 0
) -> np.ndarray:
    """Entry codes (NONPRESENT/PRESENT/ACCESSED/DIRTY) of leaf table ``table``,
    whose counts are ``counts`` row ``i``; 512 codes, padded non-present."""
    n = int(counts.entries[i])
    codes = np.zeros(PTES_PER_TABLE, dtype=np.uint8)
    ranks = leaf_entry_ranks(scenario.seed, table, n, np.arange(n))
    codes[:n] = codes_from_ranks(
        ranks, int(counts.present[i]), int(counts.accessed[i]), int(counts.dirty[i])
    )
    return codes
