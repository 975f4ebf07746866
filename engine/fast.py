"""The fast engine: the reference engine's results from aggregate structure.

A pass with zap level Z walks every existing table at levels >= its *bottom*
level B (Z itself, or the leaf level when Z is below it).  Entries above B
are single visits that step down or side; each bottom table is handled as
one block whose totals come from per-table counts: leaf counts for a leaf
table, subtree aggregates (removal cost, leaves, tables) for a table whose
entries point to child tables.  The walk is the sequence of these *pieces*
in pre-order.

Yields only happen at visits reached by a step side (the forward-progress
rule), so a yield is an insertion in front of such a visit: the aborted
visit, a TLB flush if one is pending, the yield, and the restart's visits
from the root down to the interrupted SPTE.  With ``never`` there are none;
with ``always`` there is one before every step-side visit; with ``tick`` the
next one is found by binary search on the pass's cumulative cost, and only
the bottom table where it falls is read entry by entry.

Everything is integer picoseconds, so results equal the reference engine's
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cost_model import CostModel
from .population import (
    ACCESSED,
    DIRTY,
    NONPRESENT,
    RankPrefix,
    _affine_key,
    codes_from_ranks,
    leaf_entry_ranks,
    leaf_table_counts,
)
from .result import ZapResult
from .scenario import PTES_PER_TABLE, TABLE_BYTES, Scenario

ENTRIES = PTES_PER_TABLE


def pages_per_spte(level: int) -> int:
    return 1 << (9 * (level - 1))


def table_span(level: int) -> int:
    """GFNs covered by one table at ``level``."""
    return 1 << (9 * level)


def _first_of_runs(sorted_values: np.ndarray) -> np.ndarray:
    """Start offsets of the runs of equal values in a sorted array."""
    if len(sorted_values) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])


@dataclass
class Guest:
    """The built page table, in aggregate: per-level sorted indices of the
    tables that exist (index = base GFN / table span) and leaf counts."""

    scenario: Scenario
    counts: object
    exist: dict[int, np.ndarray]

    @classmethod
    def build(cls, scenario: Scenario) -> Guest:
        counts = leaf_table_counts(scenario)
        leaf, root = scenario.leaf_level, scenario.root_level
        exist = {leaf: np.flatnonzero(counts.present > 0).astype(np.int64)}
        for level in range(leaf + 1, root):
            below = exist[level - 1] >> 9
            exist[level] = below[_first_of_runs(below)]
        exist[root] = np.zeros(1, dtype=np.int64)
        return cls(scenario, counts, exist)

    def visited_entries(self, level: int, tables: np.ndarray) -> np.ndarray:
        """Entries of each table whose GFN is below tdp_mmu_max_gfn_host()."""
        end = self.scenario.end_gfn
        base = tables * table_span(level)
        per = pages_per_spte(level)
        return np.minimum(ENTRIES, -((base - end) // per)).astype(np.int64)


@dataclass
class Subtrees:
    """Per existing table at one level: what removing it (recursively) does."""

    cost: np.ndarray  # ps
    leaves: np.ndarray
    accessed: np.ndarray
    dirty: np.ndarray
    tables: np.ndarray


class Costs:
    def __init__(self, scenario: Scenario, cm: CostModel):
        atomic = cm.atomic_write_ps if scenario.mmu_lock == "read" else 0
        self.cm = cm
        self.visit = cm.visit_ps
        self.entry_present = cm.spte_clear_ps + atomic  # clearing a present SPTE
        self.entry_nonpresent = cm.nonpresent_entry_ps + atomic
        self.accessed = cm.accessed_writeback_ps
        self.dirty = cm.dirty_writeback_ps
        self.table = cm.removed_table_ps


def subtree_aggregates(guest: Guest, costs: Costs, cleared: int | None, top: int) -> dict:
    """Subtrees of existing tables at levels up to ``top``.  ``cleared`` is
    the highest zap level done so far (its tables are empty, those below are
    gone), or None when no leaf has been zapped yet."""
    scn = guest.scenario
    out: dict[int, Subtrees] = {}
    if cleared is None:
        low = scn.leaf_level
        sel = guest.exist[low]
        p = guest.counts.present[sel].astype(np.int64)
        a = guest.counts.accessed[sel].astype(np.int64)
        d = guest.counts.dirty[sel].astype(np.int64)
        cost = (
            costs.table
            + p * costs.entry_present
            + (ENTRIES - p) * costs.entry_nonpresent
            + a * costs.accessed
            + d * costs.dirty
        )
        out[low] = Subtrees(cost, p, a, d, np.ones_like(p))
    else:
        low = cleared
        n = len(guest.exist[low])
        zero = np.zeros(n, dtype=np.int64)
        cost = np.full(n, costs.table + ENTRIES * costs.entry_nonpresent, dtype=np.int64)
        out[low] = Subtrees(cost, zero, zero, zero, np.ones(n, dtype=np.int64))
    for level in range(low + 1, top + 1):
        child = out[level - 1]
        starts = _first_of_runs(guest.exist[level - 1] >> 9)
        nchild = np.diff(np.r_[starts, len(guest.exist[level - 1])])
        out[level] = Subtrees(
            cost=costs.table
            + nchild * costs.entry_present
            + (ENTRIES - nchild) * costs.entry_nonpresent
            + np.add.reduceat(child.cost, starts),
            leaves=np.add.reduceat(child.leaves, starts),
            accessed=np.add.reduceat(child.accessed, starts),
            dirty=np.add.reduceat(child.dirty, starts),
            tables=1 + np.add.reduceat(child.tables, starts),
        )
    return out


class Pass:
    """One pass at zap level ``zap_level``: its bottom tables and the
    pre-order sequence of pieces (single upper visits and bottom blocks)."""

    def __init__(self, guest: Guest, costs: Costs, zap_level: int, cleared: int | None):
        scn = guest.scenario
        self.guest, self.costs, self.scn = guest, costs, scn
        self.root = scn.root_level
        self.zap_level = zap_level
        leaf = scn.leaf_level
        self.bottom = max(zap_level, leaf) if cleared is None else zap_level
        if zap_level < self.bottom:
            self.kind = "skip"  # bottom entries are leaves above the zap level
        elif cleared is None and self.bottom == leaf:
            self.kind = "leaf"
        else:
            self.kind = "table"
        self.tables = guest.exist[self.bottom]
        self.n = guest.visited_entries(self.bottom, self.tables)
        if self.kind == "table":
            self.sub = subtree_aggregates(guest, costs, cleared, self.bottom - 1)[self.bottom - 1]
        self._bottom_totals()
        self.upper_visits = sum(
            int(guest.visited_entries(level, guest.exist[level]).sum())
            for level in range(self.bottom + 1, self.root + 1)
        )
        self._pieces: Pieces | None = None
        self._child_sums: tuple | None = None

    # Bottom tables ---------------------------------------------------

    def _bottom_totals(self) -> None:
        c, nt = self.costs, len(self.tables)
        zero = np.zeros(nt, dtype=np.int64)
        if self.kind == "skip":
            body = ops = leaves = acc = dirty = tables = maxbody = maxleaves = zero
        elif self.kind == "leaf":
            cnt = self.guest.counts
            ops = cnt.present[self.tables].astype(np.int64)
            acc = cnt.accessed[self.tables].astype(np.int64)
            dirty = cnt.dirty[self.tables].astype(np.int64)
            leaves, tables = ops, zero
            body = ops * c.entry_present + acc * c.accessed + dirty * c.dirty
            maxbody = np.where(
                dirty > 0,
                c.entry_present + c.accessed + c.dirty,
                np.where(
                    acc > 0, c.entry_present + c.accessed, np.where(ops > 0, c.entry_present, 0)
                ),
            )
            maxleaves = (ops > 0).astype(np.int64)
        else:
            child_parent = self.guest.exist[self.bottom - 1] >> 9
            starts = _first_of_runs(child_parent)
            has = np.zeros(nt, dtype=bool)
            pos = np.searchsorted(self.tables, child_parent[starts])
            has[pos] = True

            def per_table(values: np.ndarray, ufunc=np.add) -> np.ndarray:
                out = np.zeros(nt, dtype=np.int64)
                if len(values):
                    out[pos] = ufunc.reduceat(values, starts)
                return out

            s = self.sub
            ops = per_table(np.ones(len(child_parent), dtype=np.int64))
            body = ops * c.entry_present + per_table(s.cost)
            leaves, acc, dirty = per_table(s.leaves), per_table(s.accessed), per_table(s.dirty)
            tables = per_table(s.tables)
            maxbody = np.where(has, c.entry_present + per_table(s.cost, np.maximum), 0)
            maxleaves = per_table(s.leaves, np.maximum)
        self.b_cost = self.n * c.visit + body
        self.b_ops, self.b_tables = ops, tables
        self.totals = {
            "leaf_zapped": int(leaves.sum()),
            "accessed": int(acc.sum()),
            "dirty": int(dirty.sum()),
            "tables": int(tables.sum()),
            "ops": int(ops.sum()),
        }
        self.max_op = c.visit + (int(maxbody.max()) if nt else 0)
        self.max_op_leaves = int(maxleaves.max()) if nt else 0

    def entries(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per visited entry of bottom table ``i``: (body ps, cleared, tables freed)."""
        n, c = int(self.n[i]), self.costs
        zero = np.zeros(n, dtype=np.int64)
        if self.kind == "skip":
            return zero, zero.astype(bool), zero
        table = int(self.tables[i])
        if self.kind == "leaf":
            cnt = self.guest.counts
            m = min(n, int(cnt.entries[table]))
            codes = np.zeros(n, dtype=np.uint8)
            ranks = leaf_entry_ranks(self.scn.seed, table, int(cnt.entries[table]), np.arange(m))
            codes[:m] = codes_from_ranks(
                ranks, int(cnt.present[table]), int(cnt.accessed[table]), int(cnt.dirty[table])
            )
            present = codes != NONPRESENT
            body = (
                present * c.entry_present
                + ((codes & ACCESSED) == ACCESSED) * c.accessed
                + (codes == DIRTY) * c.dirty
            ).astype(np.int64)
            return body, present, zero
        below = self.guest.exist[self.bottom - 1]
        lo, hi = np.searchsorted(below, [table * ENTRIES, table * ENTRIES + n])
        j = below[lo:hi] - table * ENTRIES
        body, freed = zero.copy(), zero.copy()
        body[j] = c.entry_present + self.sub.cost[lo:hi]
        freed[j] = self.sub.tables[lo:hi]
        present = np.zeros(n, dtype=bool)
        present[j] = True
        return body, present, freed

    # The walk's pieces -----------------------------------------------

    def pieces(self) -> Pieces:
        if self._pieces is None:
            self._pieces = Pieces.of(self)
        return self._pieces

    def prefix_params(self, b: np.ndarray) -> tuple | None:
        """What :meth:`prefix_cost` needs of the bottom tables ``b``."""
        if self.kind == "skip":
            return None
        t = self.tables[b]
        if self.kind == "table":
            if self._child_sums is None:
                s = self.sub
                self._child_sums = (
                    np.concatenate(([0], np.cumsum(self.costs.entry_present + s.cost))),
                    np.concatenate(([0], np.cumsum(s.tables))),
                )
            below = self.guest.exist[self.bottom - 1]
            return t * ENTRIES, np.searchsorted(below, t * ENTRIES)
        cnt = self.guest.counts
        midx, add = _affine_key(self.scn.seed, t)
        return tuple(RankPrefix(midx, add, x[t]) for x in (cnt.present, cnt.accessed, cnt.dirty))

    def prefix_cost(
        self, params: tuple | None, j: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cost (visits included), clears and tables freed by the first ``j``
        entries of full bottom tables, in closed form."""
        c = self.costs
        j = np.asarray(j, dtype=np.int64)
        if params is None:
            return j * c.visit, np.zeros_like(j), np.zeros_like(j)
        if self.kind == "table":
            base, lo = params
            hi = np.searchsorted(self.guest.exist[self.bottom - 1], base + j)
            cost_sum, table_sum = self._child_sums
            return j * c.visit + cost_sum[hi] - cost_sum[lo], hi - lo, table_sum[hi] - table_sum[lo]
        present, accessed, dirty = (count(j) for count in params)
        cost = j * c.visit + present * c.entry_present + accessed * c.accessed + dirty * c.dirty
        return cost, present, np.zeros_like(j)

    def full_tables(self, b: np.ndarray) -> np.ndarray:
        """Which bottom tables have 512 visited entries (and, for leaf
        tables, 512 guest entries): those have closed-form prefixes."""
        full = self.n[b] == ENTRIES
        if self.kind == "leaf":
            full &= self.guest.counts.entries[self.tables[b]] == ENTRIES
        return full


@dataclass
class Pieces:
    """The pass's walk as a pre-order sequence of pieces: an upper visit
    (``bidx`` -1) or a bottom table (``bidx`` its index), with running sums."""

    level: np.ndarray
    ss: (
        np.ndarray
    )  # reached by a step side (only upper pieces; a bottom table starts with a step down)
    bidx: np.ndarray
    visits: np.ndarray
    cum_cost: np.ndarray
    cum_visits: np.ndarray
    cum_tables: np.ndarray
    cum_ops: np.ndarray

    @classmethod
    def of(cls, p: Pass) -> Pieces:
        """Pre-order: sort by (GFN, parent before child)."""
        root, bottom, guest = p.root, p.bottom, p.guest
        gfns, levels, ss, bidx = [], [], [], []
        for level in range(bottom + 1, root + 1):
            tables = guest.exist[level]
            n = guest.visited_entries(level, tables)
            total = int(n.sum())
            first = np.repeat(np.cumsum(n) - n, n)
            j = np.arange(total, dtype=np.int64) - first
            gfns.append(np.repeat(tables * table_span(level), n) + j * pages_per_spte(level))
            levels.append(np.full(total, level, dtype=np.int8))
            ss.append(j > 0)
            bidx.append(np.full(total, -1, dtype=np.int64))
        gfns.append(p.tables * table_span(bottom))
        levels.append(np.full(len(p.tables), bottom, dtype=np.int8))
        ss.append(np.zeros(len(p.tables), dtype=bool))
        bidx.append(np.arange(len(p.tables), dtype=np.int64))
        gfn = np.concatenate(gfns)
        level = np.concatenate(levels)
        order = np.argsort(gfn * 8 + (root - level), kind="stable")
        del gfn, gfns
        level = level[order]
        bidx = np.concatenate(bidx)[order]
        ss = np.concatenate(ss)[order]
        del order
        is_b = bidx >= 0
        b = bidx[is_b]

        def running(bottom_values: np.ndarray, upper_value: int) -> np.ndarray:
            values = np.full(len(bidx), upper_value, dtype=np.int64)
            values[is_b] = bottom_values[b]
            return np.r_[0, np.cumsum(values)]

        visits = np.ones(len(bidx), dtype=np.int64)
        visits[is_b] = p.n[b]
        return cls(
            level=level,
            ss=ss,
            bidx=bidx,
            visits=visits,
            cum_cost=running(p.b_cost, p.costs.visit),
            cum_visits=np.r_[0, np.cumsum(visits)],
            cum_tables=running(p.b_tables, 0),
            cum_ops=running(p.b_ops, 0),
        )


class FastTimeline:
    """The Timeline of engine/timeline.py, advanced a piece at a time."""

    def __init__(self, scenario: Scenario, cm: CostModel):
        self.scn, self.cm = scenario, cm
        self.flush_ps = cm.flush_ps(scenario.vcpus)
        self.interval = scenario.resched_interval_ps
        self.clock = 0
        self.resched_cleared = 0
        self.hold_start = 0
        self.hold_tables = 0
        self.flush_pending = False
        self.visits = self.yields = self.tlb_flushes = 0
        self.max_hold = 0
        self.peak_tables = 0

    def advance(self, cost: int, visits: int, tables: int, cleared: bool) -> None:
        self.clock += cost
        self.visits += visits
        self.hold_tables += tables
        self.flush_pending |= cleared

    def yield_cpu(self, level: int) -> None:
        """The aborted visit, flush, yield, then the restart's walk down from
        the root to the interrupted SPTE at ``level`` (its ancestors)."""
        self.clock += self.cm.visit_ps
        self.visits += 1
        if self.scn.flush_on_yield and self.flush_pending:
            self.clock += self.flush_ps
            self.tlb_flushes += 1
            self.flush_pending = False
        self.end_hold()
        self.clock += self.cm.yield_ps
        self.yields += 1
        self.hold_start = self.clock
        self.resched_cleared = self.clock
        ancestors = self.scn.root_level - level
        self.clock += ancestors * self.cm.visit_ps
        self.visits += ancestors

    def end_hold(self) -> None:
        self.max_hold = max(self.max_hold, self.clock - self.hold_start)
        self.peak_tables = max(self.peak_tables, self.hold_tables)
        self.hold_tables = 0


def run_never(p: Pass, tl: FastTimeline) -> None:
    tl.advance(
        p.upper_visits * p.costs.visit + int(p.b_cost.sum()),
        p.upper_visits + int(p.n.sum()),
        int(p.b_tables.sum()),
        bool(p.b_ops.any()),
    )


def run_always(p: Pass, tl: FastTimeline) -> None:
    """A yield in front of every step-side visit."""
    visit, bottom = p.costs.visit, p.bottom
    pieces = p.pieces()
    for k in range(len(pieces.bidx)):
        b = int(pieces.bidx[k])
        if b < 0:
            if pieces.ss[k]:
                tl.yield_cpu(int(pieces.level[k]))
            tl.advance(visit, 1, 0, False)
            continue
        body, cleared, freed = p.entries(b)
        # Entry 0 was reached by a step down: no yield in front of it.
        tl.advance(visit + int(body[0]), 1, int(freed[0]), bool(cleared[0]))
        n = len(body)
        if n == 1:
            continue
        tl.yield_cpu(bottom)
        # Entries 1..n-2 each make a hold of their own: restart ancestors,
        # their visit and body, the next entry's aborted visit and a flush if
        # they cleared something.
        ancestors = (tl.scn.root_level - bottom) * visit
        mid = slice(1, n - 1)
        if n > 2:
            flush = tl.flush_ps if tl.scn.flush_on_yield else 0
            holds = ancestors + 2 * visit + body[mid] + cleared[mid] * flush
            tl.max_hold = max(tl.max_hold, int(holds.max()))
            tl.peak_tables = max(tl.peak_tables, int(freed[mid].max()))
            yields = n - 2
            flushes = int(cleared[mid].sum()) if tl.scn.flush_on_yield else 0
            tl.clock += (
                int(body[mid].sum())
                + yields * (2 * visit + tl.cm.yield_ps + ancestors)
                + flushes * tl.flush_ps
            )
            tl.visits += yields * (2 + tl.scn.root_level - bottom)
            tl.yields += yields
            tl.tlb_flushes += flushes
            tl.resched_cleared = tl.clock - ancestors
            tl.hold_start = tl.clock - ancestors
            tl.flush_pending = (
                False if tl.scn.flush_on_yield else tl.flush_pending or bool(cleared[mid].any())
            )
        tl.advance(visit + int(body[n - 1]), 1, int(freed[n - 1]), bool(cleared[n - 1]))


class TickWalk:
    """A pass under ``resched=tick``: the next yield is the first visit
    reached by a step side whose check sees need_resched, i.e. that starts at
    or after the next multiple of the interval minus one visit.

    ``here`` is the pass position (running cost, visits, tables, ops) where
    the next normal visit starts; ``search`` the first (piece, entry) that
    may yield (the visit at ``here`` is a restart's re-visit and cannot)."""

    BATCH = 1024  # proposals per batch; most runs end at an upper visit after ~500

    def __init__(self, p: Pass, tl: FastTimeline):
        self.p, self.tl, self.pc = p, tl, p.pieces()
        self.visit = p.costs.visit
        self.npieces = len(self.pc.bidx)
        self.cache: dict[int, tuple] = {}
        self.here = (0, 0, 0, 0)
        self.search = (0, 0)

    def run(self) -> None:
        while True:
            if self.batch(self.BATCH):
                continue
            found = self.next_yield()
            if found is None:
                break
            self.yield_at(*found)
        pc, here = self.pc, self.here
        end = (
            int(pc.cum_cost[-1]),
            int(pc.cum_visits[-1]),
            int(pc.cum_tables[-1]),
            int(pc.cum_ops[-1]),
        )
        self.tl.advance(end[0] - here[0], end[1] - here[1], end[2] - here[2], end[3] > here[3])

    # One yield at a time, reading entries where needed --------------

    def prefix(self, k: int, j: int) -> tuple[int, int, int, int]:
        """(cost, visits, tables, ops) of the first j visits of piece k."""
        if j == 0:
            return 0, 0, 0, 0
        b = int(self.pc.bidx[k])
        if b < 0:
            return self.visit, 1, 0, 0
        if b not in self.cache:
            self.cache.clear()
            body, cleared, freed = self.p.entries(b)
            self.cache[b] = (
                np.r_[0, np.cumsum(body + self.visit)],
                np.r_[0, np.cumsum(freed)],
                np.r_[0, np.cumsum(cleared)],
            )
        pcost, ptables, pops = self.cache[b]
        return int(pcost[j]), j, int(ptables[j]), int(pops[j])

    def position(self, k: int, j: int) -> tuple[int, int, int, int]:
        pc = self.pc
        c, v, t, o = self.prefix(k, j)
        return (
            int(pc.cum_cost[k]) + c,
            int(pc.cum_visits[k]) + v,
            int(pc.cum_tables[k]) + t,
            int(pc.cum_ops[k]) + o,
        )

    def target(self) -> tuple[int, int]:
        """(x, boundary): a yielding visit must start at x or later, in pass
        coordinates; boundary is the need_resched time it answers."""
        tl = self.tl
        offset = tl.clock - self.here[0]
        boundary = (tl.resched_cleared // tl.interval + 1) * tl.interval
        return boundary - self.visit - offset, boundary

    def next_yield(self) -> tuple[int, int] | None:
        x, _ = self.target()
        pc = self.pc
        k, j = self.search
        kx = int(np.searchsorted(pc.cum_cost[1:], x, side="left"))
        if kx > k:
            k, j = kx, 0
        while k < self.npieces:
            b = int(pc.bidx[k])
            if b < 0:
                if pc.ss[k] and pc.cum_cost[k] >= x:
                    return k, 0
            else:
                self.prefix(k, 1)  # fills the cache for this table
                pcost = self.cache[b][0]
                first = max(j, 1, int(np.searchsorted(pcost, x - pc.cum_cost[k], side="left")))
                if first < len(pcost) - 1:
                    return k, first
            k, j = k + 1, 0
        return None

    def yield_at(self, k: int, j: int) -> None:
        there = self.position(k, j)
        here, tl = self.here, self.tl
        tl.advance(there[0] - here[0], there[1] - here[1], there[2] - here[2], there[3] > here[3])
        tl.yield_cpu(int(self.pc.level[k]))
        self.here = there
        self.search = (
            (k + 1, 0) if self.pc.bidx[k] < 0 or j + 1 >= self.pc.visits[k] else (k, j + 1)
        )

    # Many yields at once (leaf and skip passes) ---------------------

    def batch(self, size: int) -> int:
        """Propose the next yields assuming each lands on a bottom entry of a
        full table and answers the next interval; accept the longest prefix
        for which that holds (a yield that lands on the upper visit after a
        table ends the batch, as its restart is one visit shorter).
        Returns how many were taken."""
        p, tl, pc, visit = self.p, self.tl, self.pc, self.visit
        scn = tl.scn
        x0, boundary = self.target()
        flush = tl.flush_ps if scn.flush_on_yield else 0
        omega = visit + flush + tl.cm.yield_ps + (p.root - p.bottom) * visit
        step = tl.interval - omega
        if step <= 0:
            return 0
        size = int(min(size, max(0, int(pc.cum_cost[-1]) - x0) // step + 2))
        i = np.arange(size, dtype=np.int64)
        x = x0 + i * step
        # x is ascending: search only the stretch of pieces it spans.
        k0, j0 = self.search
        k_hi = int(np.searchsorted(pc.cum_cost[1:], x[-1], side="left")) + 1
        k_lo = min(k0, int(np.searchsorted(pc.cum_cost[1:], x[0], side="left")))
        kp = k_lo + np.searchsorted(pc.cum_cost[1 + k_lo : 1 + k_hi], x, side="left")
        jmin = np.ones(size, dtype=np.int64)
        if kp[0] <= k0:
            kp[0] = k0
            jmin[0] = max(1, j0)
        ok = kp < self.npieces
        ok[ok] = pc.bidx[kp[ok]] >= 0
        ok[ok] = p.full_tables(pc.bidx[kp[ok]])
        n = int(np.argmin(ok)) if not ok.all() else size
        if n == 0:
            return 0
        kp, x, jmin, i = kp[:n], x[:n], jmin[:n], i[:n]
        b = pc.bidx[kp]
        xr = x - pc.cum_cost[kp]
        # Binary search for the first entry j >= jmin starting at or after xr.
        params = p.prefix_params(b)
        lo, hi = jmin.copy(), np.full(n, ENTRIES, dtype=np.int64)
        while True:
            live = lo < hi
            if not live.any():
                break
            mid = (lo + hi) // 2
            at = p.prefix_cost(params, mid)[0] >= xr
            hi = np.where(live & at, mid, hi)
            lo = np.where(live & ~at, mid + 1, lo)
        j = lo
        start, ops_in, freed_in = p.prefix_cost(params, j)
        start = start + pc.cum_cost[kp]
        ops_at = pc.cum_ops[kp] + ops_in
        tables_at = pc.cum_tables[kp] + freed_in
        visits_at = pc.cum_visits[kp] + j
        level = np.full(n, p.bottom, dtype=np.int64)
        spill = np.flatnonzero(j >= ENTRIES)
        if len(spill):
            # No entry of the table starts late enough: the yield falls on
            # the next piece, if that is an upper step-side visit.
            d = int(spill[0])
            nxt = int(kp[d]) + 1
            n = d
            if nxt < self.npieces and pc.bidx[nxt] < 0 and pc.ss[nxt]:
                n = d + 1
                kp[d], j[d], level[d] = nxt, 0, pc.level[nxt]
                start[d], ops_at[d] = pc.cum_cost[nxt], pc.cum_ops[nxt]
                tables_at[d], visits_at[d] = pc.cum_tables[nxt], pc.cum_visits[nxt]
            if n == 0:
                return 0
        ok = np.ones(n, dtype=bool)
        # Positions must move strictly forward.
        order_key = kp[:n] * (ENTRIES + 1) + j[:n]
        ok[1:] &= order_key[1:] > order_key[:-1]
        offset = (tl.clock - self.here[0]) + i[:n] * omega
        t_check = start[:n] + offset + visit
        t_clear = t_check + flush + tl.cm.yield_ps
        # Each yield must answer its own interval, not a later one.
        ok &= t_clear < boundary + (i[:n] + 1) * tl.interval
        if scn.flush_on_yield:
            pending = ops_at[:n] > np.concatenate(([self.here[3]], ops_at[: n - 1]))
            pending[0] |= tl.flush_pending
            ok &= pending
        n = int(np.argmin(ok)) if not ok.all() else n
        if n == 0:
            return 0
        last = n - 1
        hold_end = t_check[:n] + flush
        hold_start = np.concatenate(([tl.hold_start], t_clear[:last]))
        tl.max_hold = max(tl.max_hold, int((hold_end - hold_start).max()))
        held = np.diff(np.concatenate(([self.here[2]], tables_at[:n])))
        held[0] += tl.hold_tables
        tl.peak_tables = max(tl.peak_tables, int(held.max()))
        kl, jl = int(kp[last]), int(j[last])
        there = (int(start[last]), int(visits_at[last]), int(tables_at[last]), int(ops_at[last]))
        ancestors = p.root - level[:n]
        tl.visits += there[1] - self.here[1] + n + int(ancestors.sum())
        tl.yields += n
        if scn.flush_on_yield:
            tl.tlb_flushes += n
            tl.flush_pending = False
        else:
            tl.flush_pending |= there[3] > self.here[3]
        tl.hold_tables = 0
        tl.hold_start = tl.resched_cleared = int(t_clear[last])
        tl.clock = int(t_clear[last]) + int(ancestors[last]) * visit
        self.here = there
        if pc.bidx[kl] < 0 or jl + 1 >= ENTRIES:
            self.search = (kl + 1, 0)
        else:
            self.search = (kl, jl + 1)
        return n


def run_tick(p: Pass, tl: FastTimeline) -> None:
    TickWalk(p, tl).run()


RUNNERS = {"never": run_never, "always": run_always, "tick": run_tick}


def simulate_fast(scenario: Scenario, cm: CostModel) -> ZapResult:
    guest = Guest.build(scenario)
    costs = Costs(scenario, cm)
    tl = FastTimeline(scenario, cm)
    run = RUNNERS[scenario.resched]
    totals = {"leaf_zapped": 0, "accessed": 0, "dirty": 0, "tables": 0, "ops": 0}
    max_op = max_op_leaves = 0
    cleared: int | None = None
    for zap_level in scenario.zap_level_numbers:
        p = Pass(guest, costs, zap_level, cleared)
        run(p, tl)
        for key in totals:
            totals[key] += p.totals[key]
        max_op = max(max_op, p.max_op)
        max_op_leaves = max(max_op_leaves, p.max_op_leaves)
        if p.kind != "skip":
            cleared = zap_level
    tl.end_hold()
    return ZapResult(
        visits=tl.visits,
        yields=tl.yields,
        leaf_zapped=totals["leaf_zapped"],
        tables_freed=totals["tables"],
        removed_entries_scanned=ENTRIES * totals["tables"],
        accessed_writebacks=totals["accessed"],
        dirty_writebacks=totals["dirty"],
        tlb_flushes=tl.tlb_flushes,
        max_op_leaves=max_op_leaves,
        max_op_ns=max_op // 1000,
        max_rcu_hold_ns=tl.max_hold // 1000,
        total_ns=tl.clock // 1000,
        rcu_stall=tl.max_hold >= scenario.rcu_stall_timeout_ps,
        pending_free_peak_bytes=tl.peak_tables * TABLE_BYTES,
        ops=totals["ops"],
    )
