"""The compiled loop of the ``tick`` walk: one yield at a time.

Compiled with numba (cached on disk next to this file), because the walk is
inherently sequential: where a yield falls decides the clock, and so where
the next one falls.  Per yield it does two binary searches, over the pass's
pieces and within one bottom table, on exact integer costs.

Pass positions are (cost, tables freed, clears) in pass coordinates (the
pass's own work, without yields); the Timeline's clock is the position plus
what the yields added (``offset``).

A trace (``engine.events``) passes a ``log`` with a row per yield to fill
(LOG_COLUMNS); a sweep passes an empty one, and the walk only tests its
length once per yield.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..geometry import PTES_PER_TABLE

# Bottom kinds (bottom.Bottom.tick_prefix): how a bottom table's entry
# prefix costs are found.
SKIP, LEAF, TABLE = 0, 1, 2

# The Timeline state the kernel reads and writes, as int64 slots.
CLOCK, CLEARED_AT, HOLD_START, HOLD_TABLES, PENDING = 0, 1, 2, 3, 4
MAX_HOLD, PEAK_TABLES, YIELDS, FLUSHES, VISITS = 5, 6, 7, 8, 9
STATE_SLOTS = 10

# A yield's row in the log: the pass position of the visit it interrupts,
# the clock when its RCU hold ended (after the flush), 2 x the tables that
# hold queued for freeing + 1 if it flushed, and the clock when the walk
# resumed (after the yield and the restart's walk down).
LOG_POSITION, LOG_HOLD_END, LOG_FLAGS, LOG_RESUME = 0, 1, 2, 3
LOG_COLUMNS = 4

ENTRIES = PTES_PER_TABLE


@njit(cache=True)
def _splitmix64(z):
    """population._splitmix64 on one uint64 (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _rank_map(order_key, table):
    """population.rank_map_key for one table: (multiplier index, offset)."""
    k = _splitmix64(_splitmix64(np.uint64(table) ^ order_key))
    k = np.int64(k >> np.uint64(32))
    return k & 15, (k >> 4) & (ENTRIES - 1)


@njit(cache=True)
def _ranked_below(counts, m, add, j, threshold):
    """#{i < j : (mul[m] * i + add) mod 512 < threshold} from the prefix
    count table counts[m, j, s] = #{i < j : mul[m] * i mod 512 < s}.  (The
    table is 8 MiB: a count of none or all of the entries is not looked up.)"""
    if threshold == 0:
        return np.int64(0)
    if threshold == ENTRIES:
        return j
    lo = (ENTRIES - add) % ENTRIES
    hi = lo + threshold
    if hi > ENTRIES:
        return j - np.int64(counts[m, j, lo]) + np.int64(counts[m, j, hi - ENTRIES])
    return np.int64(counts[m, j, hi]) - np.int64(counts[m, j, lo])


@njit(cache=True)
def _bisect(values, lo, hi, x):
    """The first i in [lo, hi) with values[i] >= x, or hi (sorted values)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] >= x:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def _leaf_prefix(rank_counts, m, add, p, a, d, j, visit, entry_present, accessed_ps, dirty_ps):
    """(cost with visits, clears) of the first j entries of a full leaf table
    with counts p, a, d and rank map (m, add)."""
    pj = _ranked_below(rank_counts, m, add, j, p)
    aj = _ranked_below(rank_counts, m, add, j, a)
    dj = _ranked_below(rank_counts, m, add, j, d)
    return j * visit + pj * entry_present + aj * accessed_ps + dj * dirty_ps, pj


@njit(cache=True)
def _child_prefix(below, lo, base, j, cost_sums, table_sums, cost_each, tables_each):
    """(cost of the child tables, tables freed, clears) among the first j
    entries of a table whose children start at below[lo] (its base GFN
    index is base)."""
    hi = _bisect(below, lo, min(lo + j, len(below)), base + j)
    n = hi - lo
    cost = cost_sums[hi] - cost_sums[lo] if len(cost_sums) else n * cost_each
    freed = table_sums[hi] - table_sums[lo] if len(table_sums) else n * tables_each
    return cost, freed, n


@njit(cache=True)
def _in_table(
    kind, b, lo, hi, y, visit, entry_present, accessed_ps, dirty_ps, tables,
    present, accessed, dirty, order_key, rank_counts, partial_b, partial_sums,
    child_lo, below, child_cost, child_tables, child_cost_each, child_tables_each,
):  # fmt: skip
    """In bottom table b: the first entry j in [lo, hi) whose prefix cost is
    >= y (or hi), and the (cost with visits, tables freed, clears) of the
    entries before it.  Prefix costs never fall as j grows (costs >= 0)."""
    if kind == SKIP:  # only visits: the first j >= y / visit
        if visit > 0:
            j = max(lo, min(hi, -(-y // visit)))
        else:
            j = lo if y <= 0 else hi
        return j, j * visit, np.int64(0), np.int64(0)
    if kind == LEAF:
        for i in range(len(partial_b)):
            if partial_b[i] == b:  # running sums given in full
                while lo < hi:
                    mid = (lo + hi) // 2
                    if partial_sums[i, 0, mid] >= y:
                        hi = mid
                    else:
                        lo = mid + 1
                return lo, partial_sums[i, 0, lo], partial_sums[i, 1, lo], partial_sums[i, 2, lo]
        t = tables[b]
        m, add = _rank_map(order_key, t)
        p, a, d = np.int64(present[t]), np.int64(accessed[t]), np.int64(dirty[t])
        while lo < hi:
            mid = (lo + hi) // 2
            cost = _leaf_prefix(
                rank_counts, m, add, p, a, d, mid, visit, entry_present, accessed_ps, dirty_ps
            )[0]
            if cost >= y:
                hi = mid
            else:
                lo = mid + 1
        cost, ops = _leaf_prefix(
            rank_counts, m, add, p, a, d, lo, visit, entry_present, accessed_ps, dirty_ps
        )
        return lo, cost, np.int64(0), ops
    first, base = child_lo[b], tables[b] * ENTRIES
    while lo < hi:
        mid = (lo + hi) // 2
        cost = _child_prefix(
            below, first, base, mid, child_cost, child_tables, child_cost_each, child_tables_each
        )[0]
        if mid * visit + cost >= y:
            hi = mid
        else:
            lo = mid + 1
    cost, freed, ops = _child_prefix(
        below, first, base, lo, child_cost, child_tables, child_cost_each, child_tables_each
    )
    return lo, lo * visit + cost, freed, ops


@njit(cache=True)
def _gallop(cum_cost, k, x):
    """The first piece i >= k whose end cum_cost[i + 1] is >= x (or the
    piece count): yields move forward a few dozen pieces at a time, so
    search outward from k before bisecting (a plain bisection of a 16 TiB
    guest's 8M pieces misses the cache a dozen times)."""
    npieces = len(cum_cost) - 1
    lo, step = k, 1
    hi = k
    while hi < npieces and cum_cost[hi + 1] < x:
        lo = hi + 1
        hi = min(npieces, hi + step)
        step *= 2
    # cum_cost[i + 1] >= x for i = hi (or hi == npieces); < x below lo.
    while lo < hi:
        mid = (lo + hi) // 2
        if cum_cost[mid + 1] >= x:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def tick_walk(
    st,  # int64[STATE_SLOTS], read and written
    interval,
    visit,
    entry_present,
    accessed_ps,
    dirty_ps,
    yield_ps,
    flush_ps,
    flush_on_yield,
    root,
    head,  # pieces
    level,
    ss,
    bidx,
    cum_cost,
    cum_tables,
    cum_ops,
    kind,  # bottom
    bottom_level,
    n,
    tables,
    bp,  # bottom.Bottom.tick_prefix
    max_yields,
    log,  # int64[yields, LOG_COLUMNS]: filled as far as it goes (a trace), or empty
):
    (present, accessed, dirty, order_key, rank_counts, partial_b, partial_sums, child_lo, below,
     child_cost, child_tables, child_cost_each, child_tables_each) = bp  # fmt: skip
    npieces = len(bidx)
    has_tables = len(cum_tables) > 0
    has_ops = len(cum_ops) > 0
    here_c = here_t = here_o = np.int64(0)
    k = j = np.int64(0)  # the first (piece, visit) that may yield
    while True:
        # The next yield: the first visit reached by a step side whose check
        # (after its visit cost) sees the next multiple of the interval.
        boundary = (st[CLEARED_AT] // interval + 1) * interval
        x = boundary - visit - (st[CLOCK] - here_c)
        kx = _gallop(cum_cost, k, x)
        if kx > k:
            k, j = kx, 0
        found = -1
        in_cost = in_freed = in_ops = np.int64(0)
        while k < npieces:
            start = cum_cost[k]
            if head == 1 and j == 0 and ss[k] and start >= x:
                found = 0
                break
            b = bidx[k]
            if b >= 0:
                # Bottom entry 0 is reached by the step down: from entry 1 on.
                e, in_cost, in_freed, in_ops = _in_table(
                    kind, b, max(j - head, 1), n[b], x - start - head * visit, visit,
                    entry_present, accessed_ps, dirty_ps, tables,
                    present, accessed, dirty, order_key, rank_counts, partial_b, partial_sums,
                    child_lo, below, child_cost, child_tables, child_cost_each, child_tables_each,
                )  # fmt: skip
                if e < n[b]:
                    found = head + e
                    break
            k, j = k + 1, 0
        if found < 0:
            break
        # Move to where visit `found` of piece k starts.
        c = cum_cost[k]
        t = cum_tables[k] if has_tables else 0
        o = cum_ops[k] if has_ops else 0
        if found > 0:  # a bottom entry: after the head and the entries before it
            c += head * visit + in_cost
            t += in_freed
            o += in_ops
        st[CLOCK] += c - here_c
        st[HOLD_TABLES] += t - here_t
        if o > here_o:
            st[PENDING] = 1
        here_c, here_t, here_o = c, t, o
        # The aborted visit, a flush if one is pending, the yield, the
        # restart's walk down to the interrupted SPTE.
        at_level = level[k] if (head == 1 and found == 0) else bottom_level
        st[CLOCK] += visit
        st[VISITS] += 1
        flushed = 0
        if flush_on_yield and st[PENDING]:
            st[CLOCK] += flush_ps
            st[FLUSHES] += 1
            st[PENDING] = 0
            flushed = 1
        hold_end, queued = st[CLOCK], st[HOLD_TABLES]
        st[MAX_HOLD] = max(st[MAX_HOLD], st[CLOCK] - st[HOLD_START])
        st[PEAK_TABLES] = max(st[PEAK_TABLES], st[HOLD_TABLES])
        st[HOLD_TABLES] = 0
        st[CLOCK] += yield_ps
        st[YIELDS] += 1
        st[HOLD_START] = st[CLOCK]
        st[CLEARED_AT] = st[CLOCK]
        ancestors = root - at_level
        st[CLOCK] += ancestors * visit
        st[VISITS] += ancestors
        if st[YIELDS] <= len(log):
            r = st[YIELDS] - 1
            log[r, LOG_POSITION], log[r, LOG_HOLD_END] = c, hold_end
            log[r, LOG_FLAGS], log[r, LOG_RESUME] = 2 * queued + flushed, st[CLOCK]
        if st[YIELDS] > max_yields:  # at most one per visit: a broken layout
            raise RuntimeError("tick walk: more yields than visits")
        b = bidx[k]
        visits_k = head + (n[b] if b >= 0 else 0)
        if found + 1 < visits_k:
            j = found + 1
        else:
            k, j = k + 1, 0
    # The rest of the pass.
    st[CLOCK] += cum_cost[npieces] - here_c
    if has_tables:
        st[HOLD_TABLES] += cum_tables[npieces] - here_t
    if has_ops and cum_ops[npieces] > here_o:
        st[PENDING] = 1
