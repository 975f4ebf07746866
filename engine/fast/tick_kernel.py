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
# prefix costs are found.  MIXED has both parts: LEAF | TABLE.
SKIP, LEAF, TABLE, MIXED = 0, 1, 2, 3

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
def _rank_map(order_key, key):
    """population.rank_map_key for one run key: (multiplier index, offset)."""
    k = _splitmix64(_splitmix64(key ^ order_key))
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
def _leaf_prefix(rank_counts, m, add, p, a, d, j, visit, entry_present, accessed_ps, dirty_ps):
    """(cost with visits, clears) of the first j entries of a table of one
    whole-table run with thresholds p, a, d and rank map (m, add)."""
    pj = _ranked_below(rank_counts, m, add, j, p)
    aj = _ranked_below(rank_counts, m, add, j, a)
    dj = _ranked_below(rank_counts, m, add, j, d)
    return j * visit + pj * entry_present + aj * accessed_ps + dj * dirty_ps, pj


@njit(cache=True)
def _leaf_counts(j, t, rr0, rr1, m, add, tp, ta, td, s0, rank_counts, run_lo, run_hi, run_m,
                 run_add, run_th, split, split_cum):  # fmt: skip
    """(present, accessed, dirty) leaves among the first j entries of a
    bottom table (index t): over its partial runs [rr0, rr1) if it has any,
    else its whole-table run (rank map (m, add), thresholds tp, ta, td);
    minus the split entries among them (from s0 on), which hold no leaf."""
    p = a = d = np.int64(0)
    if rr0 < rr1:
        for r in range(rr0, rr1):
            lo = run_lo[r]
            if j <= lo:
                break
            jj = min(j, run_hi[r])
            rm, radd = run_m[r], run_add[r]
            p += _ranked_below(rank_counts, rm, radd, jj, run_th[r, 0])
            p -= _ranked_below(rank_counts, rm, radd, lo, run_th[r, 0])
            a += _ranked_below(rank_counts, rm, radd, jj, run_th[r, 1])
            a -= _ranked_below(rank_counts, rm, radd, lo, run_th[r, 1])
            d += _ranked_below(rank_counts, rm, radd, jj, run_th[r, 2])
            d -= _ranked_below(rank_counts, rm, radd, lo, run_th[r, 2])
    else:
        p = _ranked_below(rank_counts, m, add, j, tp)
        a = _ranked_below(rank_counts, m, add, j, ta)
        d = _ranked_below(rank_counts, m, add, j, td)
    if len(split):
        s1 = _bisect(split, s0, len(split), t * ENTRIES + j)
        p -= split_cum[s1, 0] - split_cum[s0, 0]
        a -= split_cum[s1, 1] - split_cum[s0, 1]
        d -= split_cum[s1, 2] - split_cum[s0, 2]
    return p, a, d


@njit(cache=True)
def _in_table(
    kind, b, lo, hi, y, visit, entry_present, accessed_ps, dirty_ps, tables,
    th_p, th_a, th_d, tslot, salts, order_key, rank_counts, run_b, run_lo, run_hi, run_m,
    run_add, run_th, split, split_cum,
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
    t = tables[b]
    leaves, children = (kind & LEAF) != 0, (kind & TABLE) != 0
    rr0 = rr1 = s0 = m = add = tp = ta = td = np.int64(0)
    if leaves:
        rr0 = _bisect(run_b, 0, len(run_b), b)
        rr1 = _bisect(run_b, rr0, len(run_b), b + 1)
        if rr0 == rr1:  # one run over the whole table
            m, add = _rank_map(order_key, np.uint64(t) ^ salts[tslot[b]])
            tp, ta, td = np.int64(th_p[b]), np.int64(th_a[b]), np.int64(th_d[b])
        if len(split):
            s0 = _bisect(split, 0, len(split), t * ENTRIES)
    if leaves and not children and rr0 == rr1 and not len(split):
        # One run over the whole table, nothing carved out: the prefix
        # counts come from the rank-count table alone (most 4K tables).
        while lo < hi:
            mid = (lo + hi) // 2
            cost = _leaf_prefix(rank_counts, m, add, tp, ta, td, mid, visit, entry_present,
                                accessed_ps, dirty_ps)[0]  # fmt: skip
            if cost >= y:
                hi = mid
            else:
                lo = mid + 1
        cost, ops = _leaf_prefix(rank_counts, m, add, tp, ta, td, lo, visit, entry_present,
                                 accessed_ps, dirty_ps)  # fmt: skip
        return lo, cost, np.int64(0), ops
    first, base = (child_lo[b], t * ENTRIES) if children else (np.int64(0), np.int64(0))
    cost = freed = ops = np.int64(0)
    while True:
        j = (lo + hi) // 2 if lo < hi else lo
        cost, freed, ops = j * visit, np.int64(0), np.int64(0)
        if leaves:
            p, a, d = _leaf_counts(j, t, rr0, rr1, m, add, tp, ta, td, s0, rank_counts, run_lo,
                                   run_hi, run_m, run_add, run_th, split, split_cum)  # fmt: skip
            cost += p * entry_present + a * accessed_ps + d * dirty_ps
            ops += p
        if children:
            c, f, n = _child_prefix(below, first, base, j, child_cost, child_tables,
                                    child_cost_each, child_tables_each)  # fmt: skip
            cost += c
            freed += f
            ops += n
        if lo >= hi:
            return lo, cost, freed, ops
        if cost >= y:
            hi = j
        else:
            lo = j + 1


@njit(cache=True)
def _armed(ss, k, ks, js):
    """Whether the walk made progress (a step side) between the search start
    (piece ks, visit js) and the step-down visit at piece k's head or first
    bottom entry: the step side that began its chain is the last head at or
    before k reached by a step side (the heads in between are entry 0 of
    their tables; the first chain of a pass has none)."""
    c = k
    while c >= 0 and not ss[c]:
        c -= 1
    return c >= 0 and (c > ks or (c == ks and js == 0))


@njit(cache=True)
def _next_step_side(head, ss, bidx, n, k, v):
    """The first visit after visit v of piece k reached by a step side: a head
    reached by one, or a bottom entry but the first (the piece count if none)."""
    v += 1
    while k < len(bidx):
        if v == 0 and head == 1 and ss[k]:
            return k, np.int64(0)
        b = bidx[k]
        if b >= 0 and max(v, head + 1) < head + n[b]:
            return k, np.int64(max(v, head + 1))
        k, v = k + 1, np.int64(0)
    return k, np.int64(0)


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
def _next_raise(cleared, interval, interval2):
    """The first clock at which a need-break raised after ``cleared`` is
    seen: the next multiple of ``interval``, or of ``interval2`` (if > 0)
    when that comes first."""
    boundary = (cleared // interval + 1) * interval
    if interval2 > 0:
        boundary = min(boundary, (cleared // interval2 + 1) * interval2)
    return boundary


@njit(cache=True)
def tick_walk(
    st,  # int64[STATE_SLOTS], read and written
    interval,  # > 0: need-break raised at its multiples of zap time
    interval2,  # a second such interval, or 0
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
    (th_p, th_a, th_d, tslot, salts, order_key, rank_counts, run_b, run_lo, run_hi, run_m, run_add,
     run_th, split, split_cum, child_lo, below, child_cost, child_tables, child_cost_each,
     child_tables_each) = bp  # fmt: skip
    npieces = len(bidx)
    has_tables = len(cum_tables) > 0
    has_ops = len(cum_ops) > 0
    here_c = here_t = here_o = np.int64(0)
    k = j = np.int64(0)  # the first (piece, visit) that may yield
    ks = js = np.int64(0)  # where the search began: the visit after the last yield
    while True:
        # The next yield: the first visit whose check (after its visit cost)
        # sees the next multiple of an interval, if the walk made progress
        # (a step side) since the last yield; otherwise the first step side
        # after it.
        boundary = _next_raise(st[CLEARED_AT], interval, interval2)
        x = boundary - visit - (st[CLOCK] - here_c)
        kx = _gallop(cum_cost, k, x)
        if kx > k:
            k, j = kx, 0
        found = -1
        late = False  # the boundary fell on a visit that may not yield
        in_cost = in_freed = in_ops = np.int64(0)
        while k < npieces:
            start = cum_cost[k]
            b = bidx[k]
            if head == 1 and j == 0 and start >= x:
                if ss[k] or _armed(ss, k, ks, js):
                    found = 0
                else:
                    late = True
                break
            if b >= 0:
                if head == 1 and j <= 1 and start + visit >= x:
                    # Bottom entry 0, reached by the step down from the head.
                    if _armed(ss, k, ks, js):
                        found = 1
                    else:
                        late, found = True, 1
                    break
                e, in_cost, in_freed, in_ops = _in_table(
                    kind, b, max(j - head, 1), n[b], x - start - head * visit, visit,
                    entry_present, accessed_ps, dirty_ps, tables,
                    th_p, th_a, th_d, tslot, salts, order_key, rank_counts, run_b, run_lo, run_hi,
                    run_m, run_add, run_th, split, split_cum,
                    child_lo, below, child_cost, child_tables, child_cost_each, child_tables_each,
                )  # fmt: skip
                if e < n[b]:
                    found = head + e
                    break
            k, j = k + 1, 0
        if late:
            # Every later check sees the boundary: the next step side yields.
            k, found = _next_step_side(head, ss, bidx, n, k, max(found, 0))
            if k < npieces and found > head:
                e = found - head
                b = bidx[k]
                _, in_cost, in_freed, in_ops = _in_table(
                    kind, b, e, e, np.int64(0), visit,
                    entry_present, accessed_ps, dirty_ps, tables,
                    th_p, th_a, th_d, tslot, salts, order_key, rank_counts, run_b, run_lo, run_hi,
                    run_m, run_add, run_th, split, split_cum,
                    child_lo, below, child_cost, child_tables, child_cost_each, child_tables_each,
                )  # fmt: skip
            elif k >= npieces:
                found = -1
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
        ks, js = k, j
    # The rest of the pass.
    st[CLOCK] += cum_cost[npieces] - here_c
    if has_tables:
        st[HOLD_TABLES] += cum_tables[npieces] - here_t
    if has_ops and cum_ops[npieces] > here_o:
        st[PENDING] = 1
