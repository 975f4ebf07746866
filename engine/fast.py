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

from dataclasses import dataclass, field

import numpy as np

from .cost_model import CostModel
from .population import (
    ACCESSED,
    DIRTY,
    NONPRESENT,
    LeafTableCounts,
    RankPrefix,
    _affine_key,
    codes_from_ranks,
    leaf_entry_ranks,
    leaf_table_count,
    leaf_table_counts,
)
from .result import ZapResult
from .scenario import PTES_PER_TABLE, Scenario
from .timeline import Timeline

ENTRIES = PTES_PER_TABLE


def pages_per_spte(level: int) -> int:
    return 1 << (9 * (level - 1))


def table_span(level: int) -> int:
    """GFNs covered by one table at ``level``."""
    return 1 << (9 * level)


def _first_of_runs(sorted_values: np.ndarray) -> np.ndarray:
    """Start offsets of the runs of equal values in a sorted array."""
    n = len(sorted_values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=starts[1:])
    return np.flatnonzero(starts)


def _running(values: np.ndarray) -> np.ndarray:
    """0, then the running sums of ``values``: sums before each item, and the total.
    (np.r_ costs more than the cumsum itself on the small arrays of small guests.)"""
    out = np.empty(len(values) + 1, dtype=np.int64)
    out[0] = 0
    np.cumsum(values, out=out[1:])
    return out


COUNT_CHUNK = 1 << 16  # leaf tables drawn at a time: the draw's temporaries stay in cache


def compact_leaf_table_counts(scenario: Scenario) -> LeafTableCounts:
    """leaf_table_counts() of every leaf table, drawn a chunk at a time and
    kept as int16 (counts are at most 512): a 16 TiB guest has 8M leaf
    tables, and four int64 arrays of them would be 256 MiB."""
    total = leaf_table_count(scenario)
    out = LeafTableCounts(*(np.empty(total, dtype=np.int16) for _ in range(4)))
    for lo in range(0, total, COUNT_CHUNK):
        hi = min(total, lo + COUNT_CHUNK)
        chunk = leaf_table_counts(scenario, np.arange(lo, hi, dtype=np.int64))
        for name in ("entries", "present", "accessed", "dirty"):
            getattr(out, name)[lo:hi] = getattr(chunk, name)
    return out


def _weighted_sum(first: np.ndarray, weight: int, *terms: tuple[np.ndarray, int]) -> np.ndarray:
    """first * weight + sum of x * w over terms, in int64, a cache-sized chunk
    at a time: the leaf counts are int16, and widening whole arrays of a
    16 TiB guest's 8M tables would stream a dozen 64 MiB temporaries."""
    out = np.empty(len(first), dtype=np.int64)
    scratch = np.empty(min(len(first), COUNT_CHUNK), dtype=np.int64)
    for lo in range(0, len(first), COUNT_CHUNK):
        hi = min(len(first), lo + COUNT_CHUNK)
        acc, tmp = out[lo:hi], scratch[: hi - lo]
        np.multiply(first[lo:hi], weight, out=acc, dtype=np.int64)
        for x, w in terms:
            if w:
                np.multiply(x[lo:hi], w, out=tmp, dtype=np.int64)
                acc += tmp
    return out


@dataclass
class Guest:
    """The built page table, in aggregate: per-level sorted indices of the
    tables that exist (index = base GFN / table span) and leaf counts."""

    scenario: Scenario
    counts: LeafTableCounts  # int16
    exist: dict[int, np.ndarray]
    _visited: dict[int, np.ndarray] = field(default_factory=dict)
    # Passes already built on this guest, by (zap level, cleared, costs):
    # scenarios of one VM shape that differ in vCPUs, flush_on_yield or
    # scheduling walk the same passes.  Kept only for guests small enough
    # (PASS_CACHE_TABLES) that holding their passes costs little memory.
    passes: dict[tuple, Pass] = field(default_factory=dict)

    @classmethod
    def build(cls, scenario: Scenario) -> Guest:
        counts = compact_leaf_table_counts(scenario)
        leaf, root = scenario.leaf_level, scenario.root_level
        exist = {leaf: np.flatnonzero(counts.present > 0).astype(np.int64)}
        for level in range(leaf + 1, root):
            below = exist[level - 1] >> 9
            exist[level] = below[_first_of_runs(below)]
        exist[root] = np.zeros(1, dtype=np.int64)
        return cls(scenario, counts, exist)

    def visited(self, level: int) -> np.ndarray:
        """Entries visited in each existing table at ``level``: those whose GFN
        is below tdp_mmu_max_gfn_host().  Every pass asks again: kept."""
        if level not in self._visited:
            self._visited[level] = self.visited_entries(level, self.exist[level])
        return self._visited[level]

    def visited_entries(self, level: int, tables: np.ndarray) -> np.ndarray:
        """Entries of each of ``tables`` whose GFN is below tdp_mmu_max_gfn_host()."""
        end = self.scenario.end_gfn
        n = np.full(len(tables), ENTRIES, dtype=np.int64)
        # Only tables that reach past end are cut short (tables are sorted).
        cut = int(np.searchsorted(tables, end // table_span(level), side="left"))
        base = tables[cut:] * table_span(level)
        n[cut:] = np.minimum(ENTRIES, -((base - end) // pages_per_spte(level)))
        return n


@dataclass
class Subtrees:
    """Per existing table at one level: what removing it (recursively) does.
    A field may be a plain int, the same for every table of the level (the
    emptied tables of the last zap level: a 16 TiB guest has 8M of them)."""

    cost: np.ndarray | int  # ps
    leaves: np.ndarray | int
    accessed: np.ndarray | int
    dirty: np.ndarray | int
    tables: np.ndarray | int


def _per_run(values: np.ndarray | int, starts: np.ndarray, lengths: np.ndarray, ufunc=np.add):
    """``ufunc`` over each run of ``values`` (runs start at ``starts`` and
    are ``lengths`` long); a uniform value needs no pass over the runs."""
    if not isinstance(values, np.ndarray):
        return lengths * values if ufunc is np.add else np.full(len(starts), values, np.int64)
    return ufunc.reduceat(values, starts)


def _rows(values: np.ndarray | int, lo: int, hi: int) -> np.ndarray | int:
    return values if not isinstance(values, np.ndarray) else values[lo:hi]


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
        # What a Pass is built from: equal keys, equal passes.
        self.key = (
            self.visit,
            self.entry_present,
            self.entry_nonpresent,
            self.accessed,
            self.dirty,
            self.table,
        )


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
        out[low] = Subtrees(cost, p, a, d, 1)
    else:
        low = cleared
        out[low] = Subtrees(costs.table + ENTRIES * costs.entry_nonpresent, 0, 0, 0, 1)
    for level in range(low + 1, top + 1):
        child = out[level - 1]
        starts = _first_of_runs(guest.exist[level - 1] >> 9)
        nchild = np.diff(starts, append=len(guest.exist[level - 1]))

        def per_table(values, starts=starts, nchild=nchild):
            return _per_run(values, starts, nchild)

        out[level] = Subtrees(
            cost=costs.table
            + nchild * costs.entry_present
            + (ENTRIES - nchild) * costs.entry_nonpresent
            + per_table(child.cost),
            leaves=per_table(child.leaves),
            accessed=per_table(child.accessed),
            dirty=per_table(child.dirty),
            tables=1 + per_table(child.tables),
        )
    return out


class _AllOrNone:
    """The prefix count of full tables whose count is 0 for all, or 512 for
    all (the interface of population.RankPrefix, exact: no slack)."""

    slack = 0.0

    def __init__(self, threshold: np.ndarray):
        self.share = 0.0 if (threshold == 0).all() else 1.0

    def __call__(self, j: np.ndarray) -> np.ndarray:
        return j if self.share else np.zeros_like(j)


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
        self.n = guest.visited(self.bottom)
        if self.kind == "table":
            self.sub = subtree_aggregates(guest, costs, cleared, self.bottom - 1)[self.bottom - 1]
        self._bottom_totals()
        self.upper_visits = sum(
            int(guest.visited(level).sum()) for level in range(self.bottom + 1, self.root + 1)
        )
        self._pieces: Pieces | None = None
        self._child_sums: tuple | None = None

    # Bottom tables ---------------------------------------------------

    def _bottom_totals(self) -> None:
        c, nt = self.costs, len(self.tables)
        zero = np.zeros(nt, dtype=np.int16)
        if self.kind == "skip":
            body = ops = leaves = acc = dirty = tables = zero
            max_body = max_leaves = 0
        elif self.kind == "leaf":
            cnt = self.guest.counts
            every = nt == len(cnt.present)  # then tables are 0..nt-1: no gather
            ops, acc, dirty = (
                x if every else x[self.tables] for x in (cnt.present, cnt.accessed, cnt.dirty)
            )
            leaves, tables = ops, zero
            body = None  # b_cost below, from the counts directly
            # The costliest single leaf anywhere (costs are >= 0).
            if dirty.any():
                max_body = c.entry_present + c.accessed + c.dirty
            elif acc.any():
                max_body = c.entry_present + c.accessed
            else:
                max_body = c.entry_present if ops.any() else 0
            max_leaves = int(ops.any())
        else:
            child_parent = self.guest.exist[self.bottom - 1] >> 9
            starts = _first_of_runs(child_parent)
            has = np.zeros(nt, dtype=bool)
            pos = np.searchsorted(self.tables, child_parent[starts])
            has[pos] = True

            nchild = np.diff(starts, append=len(child_parent))

            def per_table(values: np.ndarray | int, ufunc=np.add) -> np.ndarray:
                out = np.zeros(nt, dtype=np.int64)
                if len(starts):
                    out[pos] = _per_run(values, starts, nchild, ufunc)
                return out

            s = self.sub
            ops = np.zeros(nt, dtype=np.int64)  # clears: one per child table
            ops[pos] = nchild
            body = ops * c.entry_present + per_table(s.cost)
            leaves, acc, dirty = per_table(s.leaves), per_table(s.accessed), per_table(s.dirty)
            tables = per_table(s.tables)
            maxbody = np.where(has, c.entry_present + per_table(s.cost, np.maximum), 0)
            max_body = int(maxbody.max()) if nt else 0
            max_leaves = int(per_table(s.leaves, np.maximum).max()) if nt else 0
        if body is None:
            self.b_cost = _weighted_sum(
                self.n, c.visit, (ops, c.entry_present), (acc, c.accessed), (dirty, c.dirty)
            )
        else:
            self.b_cost = self.n * c.visit + body
        self.b_ops, self.b_tables = ops, tables
        self.totals = {
            "leaf_zapped": int(leaves.sum()),
            "accessed": int(acc.sum()),
            "dirty": int(dirty.sum()),
            "tables": int(tables.sum()),
            "ops": int(ops.sum()),
        }
        self.max_op = c.visit + max_body
        self.max_op_leaves = max_leaves

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
        body[j] = c.entry_present + _rows(self.sub.cost, lo, hi)
        freed[j] = _rows(self.sub.tables, lo, hi)
        present = np.zeros(n, dtype=bool)
        present[j] = True
        return body, present, freed

    # The walk's pieces -----------------------------------------------

    def pieces(self, with_ops: bool) -> Pieces:
        """The walk's pieces; running clears only when ``with_ops`` (a cached
        pass may be asked first without them, then with)."""
        if self._pieces is None or (with_ops and self._pieces.cum_ops is None):
            self._pieces = Pieces.of(self, with_ops)
        return self._pieces

    def prefix_params(self, b: np.ndarray) -> tuple | None:
        """What :meth:`prefix_cost` needs of the bottom tables ``b``."""
        if self.kind == "skip":
            return None
        t = self.tables[b]
        if self.kind == "table":
            if self._child_sums is None:
                s = self.sub
                self._child_sums = tuple(
                    _running(v) if isinstance(v, np.ndarray) else v
                    for v in (self.costs.entry_present + s.cost, s.tables)
                )
            below = self.guest.exist[self.bottom - 1]
            return t * ENTRIES, np.searchsorted(below, t * ENTRIES)
        cnt = self.guest.counts
        thresholds = [x[t] for x in (cnt.present, cnt.accessed, cnt.dirty)]
        # A count that is 0 in every table, or 512 in every table, needs no
        # rank map: none or all of the first j entries rank below it (in a
        # fully populated guest with A=1, present and accessed are both 512).
        trivial = [bool((th == 0).all() or (th == ENTRIES).all()) for th in thresholds]
        key = None if all(trivial) else _affine_key(self.scn.seed, t)
        return tuple(
            _AllOrNone(th) if easy else RankPrefix(*key, th)
            for th, easy in zip(thresholds, trivial, strict=True)
        )

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
            cleared = hi - lo
            cost_in, tables_in = (
                v[hi] - v[lo] if isinstance(v, np.ndarray) else cleared * v
                for v in self._child_sums
            )
            return j * c.visit + cost_in, cleared, tables_in
        present, accessed, dirty = (count(j) for count in params)
        cost = j * c.visit + present * c.entry_present + accessed * c.accessed + dirty * c.dirty
        return cost, present, np.zeros_like(j)

    def window(
        self, params: tuple | None, lo: np.ndarray, hi: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Narrow [lo, hi) around the first entry j whose prefix cost is >= y,
        for full leaf tables.  The prefix cost is j * slope within +-slack
        (each count is within its slack of j times its share), so every j
        below (y - slack) / slope - 1 costs less than y and the j above
        (y + slack) / slope + 1 costs at least y: the binary search over the
        narrowed range finds the same entry in 4 or 5 steps instead of 9.
        Prefix costs never fall as j grows (costs are >= 0)."""
        if self.kind != "leaf" or params is None:
            return lo, hi
        c = self.costs
        weights = (c.entry_present, c.accessed, c.dirty)
        slope = c.visit + sum(w * count.share for w, count in zip(weights, params, strict=True))
        if np.min(slope) <= 0:
            return lo, hi
        slack = sum(w * count.slack for w, count in zip(weights, params, strict=True))
        below = np.floor((y - slack) / slope).astype(np.int64) - 1
        above = np.ceil((y + slack) / slope).astype(np.int64) + 1
        hi = np.maximum(np.minimum(hi, above), lo)
        return np.minimum(np.maximum(lo, below), hi), hi

    def full_tables(self, b: np.ndarray) -> np.ndarray:
        """Which bottom tables have 512 visited entries (and, for leaf
        tables, 512 guest entries): those have closed-form prefixes."""
        full = self.n[b] == ENTRIES
        if self.kind == "leaf":
            full &= self.guest.counts.entries[self.tables[b]] == ENTRIES
        return full


@dataclass
class Pieces:
    """The pass's walk as a pre-order sequence of pieces, with running sums.

    When the bottom level B is below the root, every visited entry of a
    level-(B+1) table is one *compound* piece: its visit 0 is that entry
    (the *head*, reached by a step side unless it is entry 0 of its table)
    and, when the entry points to a bottom table, visits 1.. are that
    table's entries (entry 0 reached by the step down, the others by step
    sides).  Entries at levels above B+1 are pieces of a single head visit.
    So visit j of a piece is its head for j = 0 and bottom entry j - 1
    otherwise.  When B is the root there is no head: the pass is one piece,
    the root table, and visit j is its entry j.

    Halving the piece count this way (instead of one piece per upper visit
    and one per bottom table) keeps a 16 TiB guest's 4K pass at 8M pieces,
    and the order needs no sort: the level-(B+1) entries are already in
    order, and the few higher entries are inserted in front of their
    subtrees.
    """

    head: int  # visits before the bottom table: 1, or 0 for the root-only pass
    level: np.ndarray  # int8, level of the head visit
    ss: np.ndarray  # bool, the head visit is reached by a step side
    bidx: np.ndarray  # the bottom table of the piece, or -1
    cum_cost: np.ndarray  # ps before each piece, and the pass total
    cum_tables: np.ndarray | None  # tables freed before each piece; None if none are
    cum_ops: np.ndarray | None  # clears before each piece; built only when read
    visits: int  # all visits of the pass, yields' re-visits excluded

    @classmethod
    def of(cls, p: Pass, with_ops: bool) -> Pieces:
        root, bottom, guest, visit = p.root, p.bottom, p.guest, p.costs.visit
        nb = len(p.tables)
        index_type = np.int32 if nb < 2**31 else np.int64
        visits = p.upper_visits + int(p.n.sum())
        if bottom == root:  # one bottom table, the root, and nothing above it
            return cls(
                head=0,
                level=np.full(1, root, dtype=np.int8),
                ss=np.zeros(1, dtype=bool),
                bidx=np.zeros(1, dtype=index_type),
                cum_cost=_running(p.b_cost),
                cum_tables=_running(p.b_tables),
                cum_ops=_running(p.b_ops),
                visits=visits,
            )
        # Compound pieces: the visited entries of the level-(B+1) tables, in
        # table order.  Bottom table t hangs under table t >> 9, entry t & 511.
        parent_level = bottom + 1
        parents = guest.exist[parent_level]
        n_parent = guest.visited(parent_level)
        first = np.cumsum(n_parent) - n_parent
        m = int(n_parent.sum())
        full = nb == m  # every entry points to a bottom table: piece i is table i
        pos = None if full else first[np.searchsorted(parents, p.tables >> 9)] + (p.tables & 511)

        def per_compound(values: np.ndarray, fill: int, dtype=np.int64) -> np.ndarray:
            if full:
                return values.astype(dtype, copy=False)
            out = np.full(m, fill, dtype=dtype)
            out[pos] = values
            return out

        ss = np.ones(m, dtype=bool)
        ss[first] = False
        # Entries above level B+1: each goes in front of the compound pieces
        # of its subtree, i.e. of the first level-(B+1) table at or after its
        # GFN (the GFN is aligned to a level-(B+1) table span).
        up_gfn, up_level, up_ss = [], [], []
        for level in range(parent_level + 1, root + 1):
            tables = guest.exist[level]
            n = guest.visited(level)
            j = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
            up_gfn.append(np.repeat(tables * table_span(level), n) + j * pages_per_spte(level))
            up_level.append(np.full(len(j), level, dtype=np.int8))
            up_ss.append(j > 0)
        gfn = np.concatenate(up_gfn) if up_gfn else np.zeros(0, dtype=np.int64)
        up_level = np.concatenate(up_level) if up_level else np.zeros(0, dtype=np.int8)
        up_ss = np.concatenate(up_ss) if up_ss else np.zeros(0, dtype=bool)
        order = np.argsort(gfn * 8 + (root - up_level), kind="stable")  # parent first
        gfn, up_level, up_ss = gfn[order], up_level[order], up_ss[order]
        at = np.append(first, m)[np.searchsorted(parents, gfn // table_span(parent_level))]

        # np.insert(compound, at, upper) for several arrays: ``at`` is sorted,
        # so the upper entries land at at + 0, 1, 2, ... of the merged array.
        upper_at = at + np.arange(len(at))
        is_compound = np.ones(m + len(at), dtype=bool)
        is_compound[upper_at] = False

        def merged(compound: np.ndarray, upper) -> np.ndarray:
            if not len(at):
                return compound
            out = np.empty(len(is_compound), dtype=compound.dtype)
            out[upper_at] = upper
            out[is_compound] = compound
            return out

        def running(bottom_values: np.ndarray, head_value: int) -> np.ndarray:
            return _running(merged(per_compound(bottom_values, 0) + head_value, head_value))

        return cls(
            head=1,
            level=merged(np.full(m, parent_level, dtype=np.int8), up_level),
            ss=merged(ss, up_ss),
            bidx=merged(per_compound(np.arange(nb, dtype=index_type), -1, index_type), -1),
            cum_cost=running(p.b_cost, visit),
            cum_tables=running(p.b_tables, 0) if p.b_tables.any() else None,
            cum_ops=running(p.b_ops, 0) if with_ops else None,
            visits=visits,
        )

    def piece_visits(self, k: int, n: np.ndarray) -> int:
        b = int(self.bidx[k])
        return self.head + (int(n[b]) if b >= 0 else 0)

    def at(self, k) -> tuple:
        """(cost, tables, ops) before piece(s) ``k``; ops only when built."""
        return (
            self.cum_cost[k],
            0 if self.cum_tables is None else self.cum_tables[k],
            0 if self.cum_ops is None else self.cum_ops[k],
        )


class FastTimeline(Timeline):
    """The Timeline of engine/timeline.py, advanced a piece at a time: a
    stretch of the walk is charged as a whole, and a yield comes with the
    visit it aborts and the restart's walk back down."""

    def advance(self, cost: int, visits: int, tables: int, cleared: bool) -> None:
        self.clock += cost
        self.visits += visits
        self.hold_tables += tables
        self.flush_pending |= cleared

    def yield_and_restart(self, level: int) -> None:
        """The aborted visit, flush, yield, then the restart's walk down from
        the root to the interrupted SPTE at ``level`` (its ancestors)."""
        self.clock += self.cm.visit_ps
        self.visits += 1
        self.flush_and_yield()
        ancestors = self.scenario.root_level - level
        self.clock += ancestors * self.cm.visit_ps
        self.visits += ancestors


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
    pieces = p.pieces(with_ops=False)
    for k in range(len(pieces.bidx)):
        if pieces.head:
            if pieces.ss[k]:
                tl.yield_and_restart(int(pieces.level[k]))
            tl.advance(visit, 1, 0, False)
        b = int(pieces.bidx[k])
        if b < 0:
            continue
        body, cleared, freed = p.entries(b)
        # Entry 0 was reached by a step down: no yield in front of it.
        tl.advance(visit + int(body[0]), 1, int(freed[0]), bool(cleared[0]))
        n = len(body)
        if n == 1:
            continue
        tl.yield_and_restart(bottom)
        # Entries 1..n-2 each make a hold of their own: restart ancestors,
        # their visit and body, the next entry's aborted visit and a flush if
        # they cleared something.
        ancestors = (tl.scenario.root_level - bottom) * visit
        mid = slice(1, n - 1)
        if n > 2:
            flush = tl.flush_ps if tl.scenario.flush_on_yield else 0
            holds = ancestors + 2 * visit + body[mid] + cleared[mid] * flush
            tl.max_hold_ps = max(tl.max_hold_ps, int(holds.max()))
            tl.pending_free_peak_tables = max(tl.pending_free_peak_tables, int(freed[mid].max()))
            yields = n - 2
            flushes = int(cleared[mid].sum()) if tl.scenario.flush_on_yield else 0
            tl.clock += (
                int(body[mid].sum())
                + yields * (2 * visit + tl.cm.yield_ps + ancestors)
                + flushes * tl.flush_ps
            )
            tl.visits += yields * (2 + tl.scenario.root_level - bottom)
            tl.yields += yields
            tl.tlb_flushes += flushes
            tl.resched_cleared = tl.clock - ancestors
            tl.hold_start = tl.clock - ancestors
            tl.flush_pending = not tl.scenario.flush_on_yield and (
                tl.flush_pending or bool(cleared[mid].any())
            )
        tl.advance(visit + int(body[n - 1]), 1, int(freed[n - 1]), bool(cleared[n - 1]))


class TickWalk:
    """A pass under ``resched=tick``: the next yield is the first visit
    reached by a step side whose check sees need_resched, i.e. that starts at
    or after the next multiple of the interval minus one visit.

    ``here`` is the pass position (running cost, tables freed, clears) where
    the next normal visit starts; ``search`` the first (piece, visit) that
    may yield (the visit at ``here`` is a restart's re-visit and cannot).
    Clears are only tracked with flush_on_yield: nothing else reads
    flush_pending.  Visits are counted once, for the whole pass, at the end:
    the walk's own visits do not depend on where it yields."""

    BATCH = 2048  # proposals per batch: a batch costs about the same for 100 or 4000

    def __init__(self, p: Pass, tl: FastTimeline):
        self.flush = tl.scenario.flush_on_yield
        self.p, self.tl, self.pc = p, tl, p.pieces(with_ops=self.flush)
        self.visit = p.costs.visit
        self.npieces = len(self.pc.bidx)
        self.cache: dict[int, tuple] = {}
        self.here = (0, 0, 0)
        self.search = (0, 0)

    def run(self) -> None:
        # Batches pay off when yields answer consecutive intervals; when
        # operations outlast the interval (e.g. 1G removals at a 1 ms tick)
        # each batch would take one yield, so fall back to single steps and
        # try a batch again only after a while.
        size, skip = self.BATCH, 0
        while True:
            if skip:
                skip -= 1
            else:
                taken = self.batch(size)
                if taken >= 8:
                    size = self.BATCH
                    continue
                skip = 64
            found = self.next_yield()
            if found is None:
                break
            self.yield_at(*found)
        end = tuple(int(v) for v in self.pc.at(self.npieces))
        self.move_to(end)
        self.tl.visits += self.pc.visits

    def move_to(self, there: tuple[int, int, int]) -> None:
        here = self.here
        self.tl.advance(there[0] - here[0], 0, there[1] - here[1], there[2] > here[2])
        self.here = there

    # One yield at a time, reading entries where needed --------------

    def table_prefix(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Running (cost, tables, ops) over the entries of bottom table b."""
        if b not in self.cache:
            self.cache.clear()
            body, cleared, freed = self.p.entries(b)
            self.cache[b] = (
                _running(body + self.visit),
                _running(freed),
                _running(cleared),
            )
        return self.cache[b]

    def position(self, k: int, j: int) -> tuple[int, int, int]:
        """Pass position where visit j of piece k starts."""
        c, t, o = (int(v) for v in self.pc.at(k))
        head = self.pc.head
        if j > 0 and head:
            c, j = c + self.visit, j - 1
        if j > 0:
            pcost, ptables, pops = self.table_prefix(int(self.pc.bidx[k]))
            c, t, o = c + int(pcost[j]), t + int(ptables[j]), o + int(pops[j])
        return c, t, o

    def target(self) -> tuple[int, int]:
        """(x, boundary): a yielding visit must start at x or later, in pass
        coordinates; boundary is the need_resched time it answers."""
        tl = self.tl
        offset = tl.clock - self.here[0]
        boundary = (tl.resched_cleared // tl.interval_ps + 1) * tl.interval_ps
        return boundary - self.visit - offset, boundary

    def next_yield(self) -> tuple[int, int] | None:
        x, _ = self.target()
        pc, head = self.pc, self.pc.head
        k, j = self.search
        kx = int(np.searchsorted(pc.cum_cost[1:], x, side="left"))
        if kx > k:
            k, j = kx, 0
        while k < self.npieces:
            start = int(pc.cum_cost[k])
            if head and j == 0 and pc.ss[k] and start >= x:
                return k, 0
            b = int(pc.bidx[k])
            if b >= 0:
                pcost = self.table_prefix(b)[0]
                # Bottom entry 0 is reached by the step down: from entry 1.
                e = int(np.searchsorted(pcost, x - start - head * self.visit, side="left"))
                e = max(j - head, 1, e)
                if e < len(pcost) - 1:
                    return k, head + e
            k, j = k + 1, 0
        return None

    def yield_at(self, k: int, j: int) -> None:
        self.move_to(self.position(k, j))
        pc = self.pc
        self.tl.yield_and_restart(int(pc.level[k]) if pc.head and j == 0 else self.p.bottom)
        self.search = (k, j + 1) if j + 1 < pc.piece_visits(k, self.p.n) else (k + 1, 0)

    # Many yields at once --------------------------------------------

    def batch(self, size: int) -> int:
        """Propose the next yields assuming each answers the next interval
        and lands on a bottom entry of a full table, or on the head of the
        piece after one; accept the longest prefix for which that holds.
        Returns how many were taken."""
        p, tl, pc, visit, head = self.p, self.tl, self.pc, self.visit, self.pc.head
        x0, boundary = self.target()
        flush = tl.flush_ps if self.flush else 0
        omega = visit + flush + tl.cm.yield_ps + (p.root - p.bottom) * visit
        step = tl.interval_ps - omega
        # Every visit of the pass starts before its total cost: when the next
        # yield may start no earlier, the pass ends without one.
        if step <= 0 or x0 >= int(pc.cum_cost[-1]):
            return 0
        size = int(min(size, (int(pc.cum_cost[-1]) - x0) // step + 2))
        i = np.arange(size, dtype=np.int64)
        x = x0 + i * step
        # x is ascending: search only the stretch of pieces it spans.
        k0, j0 = self.search
        k_hi = int(np.searchsorted(pc.cum_cost[1:], x[-1], side="left")) + 1
        k_lo = min(k0, int(np.searchsorted(pc.cum_cost[1:], x[0], side="left")))
        kp = k_lo + np.searchsorted(pc.cum_cost[1 + k_lo : 1 + k_hi], x, side="left")
        emin = np.ones(size, dtype=np.int64)  # bottom entry 0 is reached by a step down
        ok = kp < self.npieces
        if kp[0] <= k0:
            kp[0] = k0
            emin[0] = max(1, j0 - head)
            if head and j0 == 0:
                ok[0] = False  # may land on the head: one at a time
        ok[ok] = pc.bidx[kp[ok]] >= 0
        ok[ok] = p.full_tables(pc.bidx[kp[ok]])
        n = int(np.argmin(ok)) if not ok.all() else size
        if n == 0:
            return 0
        kp, x, emin, i = kp[:n], x[:n], emin[:n], i[:n]
        params = p.prefix_params(pc.bidx[kp])
        entry0 = pc.cum_cost[kp] + head * visit  # where bottom entry 0 starts
        e = self.first_entries(params, emin, np.full(n, ENTRIES, dtype=np.int64), x - entry0)
        # When no entry of the table starts late enough (e = 512) the yield
        # falls on the head of the next piece, if a step side reaches it.
        # Its restart walks down from a higher level: `short` visits fewer,
        # so every later proposal moves that much later, which moves its
        # entry by at most as many (an entry costs at least a visit).
        short = np.zeros(n, dtype=np.int64)
        d = -1
        while True:
            spills = np.flatnonzero(e[d + 1 : n] >= ENTRIES)
            if len(spills) == 0:
                break
            d += 1 + int(spills[0])
            k = int(kp[d]) + 1
            if not (head and k < self.npieces and pc.ss[k] and pc.cum_cost[k] >= x[d]):
                n = d  # a landing further on: one at a time
                break
            delta = int(pc.level[k]) - p.bottom
            later = slice(d + 1, n)
            short[later] += delta
            x[later] += delta * visit
            lo, hi = e.copy(), e.copy()
            hi[later] = np.minimum(e[later] + delta, ENTRIES)
            # A proposal moved past the end of its piece starts over in the
            # piece it is in now, if that is a full table.
            moved = d + 1 + np.flatnonzero(x[later] > pc.cum_cost[kp[later] + 1])
            if len(moved):
                kp[moved] = np.searchsorted(pc.cum_cost[1:], x[moved], side="left")
                fits = kp[moved] < self.npieces
                fits[fits] = pc.bidx[kp[moved][fits]] >= 0
                fits[fits] = p.full_tables(pc.bidx[kp[moved][fits]])
                if not fits.all():
                    n = int(moved[np.argmin(fits)])
                    moved = moved[moved < n]
                kp, x, i, e, lo, hi, short = (v[:n] for v in (kp, x, i, e, lo, hi, short))
                params = p.prefix_params(pc.bidx[kp])
                entry0 = pc.cum_cost[kp] + head * visit
                lo[moved], hi[moved] = 1, ENTRIES
            e = self.first_entries(params, lo, hi, x - entry0)
        if n == 0:
            return 0
        start, ops_in, freed_in = (v[:n] for v in p.prefix_cost(params, e))
        kp, e, i, short, entry0 = kp[:n], e[:n], i[:n], short[:n], entry0[:n]
        before = pc.at(kp)
        start = start + entry0
        tables_at = before[1] + freed_in
        ops_at = before[2] + ops_in
        j = head + e
        level = np.full(n, p.bottom, dtype=np.int64)
        spill = e >= ENTRIES
        if spill.any():
            kp[spill] += 1
            j[spill] = 0
            level[spill] = pc.level[kp[spill]]
            start[spill], tables_at[spill], ops_at[spill] = pc.at(kp[spill])
        ok = np.ones(n, dtype=bool)
        # Positions must move strictly forward.
        order_key = kp * (ENTRIES + 2) + j
        ok[1:] &= order_key[1:] > order_key[:-1]
        offset = (tl.clock - self.here[0]) + i * omega - short * visit
        t_check = start + offset + visit
        t_clear = t_check + flush + tl.cm.yield_ps
        # Each yield must answer its own interval, not a later one.
        ok &= t_clear < boundary + (i + 1) * tl.interval_ps
        if self.flush:
            pending = ops_at > np.concatenate(([self.here[2]], ops_at[: n - 1]))
            pending[0] |= tl.flush_pending
            ok &= pending
        n = int(np.argmin(ok)) if not ok.all() else n
        if n == 0:
            return 0
        last = n - 1
        hold_end = t_check[:n] + flush
        hold_start = np.concatenate(([tl.hold_start], t_clear[:last]))
        tl.max_hold_ps = max(tl.max_hold_ps, int((hold_end - hold_start).max()))
        held = np.diff(np.concatenate(([self.here[1]], tables_at[:n])))
        held[0] += tl.hold_tables
        tl.pending_free_peak_tables = max(tl.pending_free_peak_tables, int(held.max()))
        kl, jl = int(kp[last]), int(j[last])
        there = (int(start[last]), int(tables_at[last]), int(ops_at[last]))
        ancestors = p.root - level[:n]
        tl.visits += n + int(ancestors.sum())
        tl.yields += n
        if self.flush:
            tl.tlb_flushes += n
            tl.flush_pending = False
        tl.hold_tables = 0
        tl.hold_start = tl.resched_cleared = int(t_clear[last])
        tl.clock = int(t_clear[last]) + int(ancestors[last]) * visit
        self.here = there
        more = jl + 1 < pc.piece_visits(kl, p.n)
        self.search = (kl, jl + 1) if more else (kl + 1, 0)
        return n

    def first_entries(
        self, params: tuple | None, lo: np.ndarray, hi: np.ndarray, x: np.ndarray
    ) -> np.ndarray:
        """Per proposal, the first bottom entry in [lo, hi) that starts at or
        after x (relative to entry 0), or hi: a vectorized binary search."""
        lo, hi = self.p.window(params, lo, hi, x)
        while True:
            live = lo < hi
            if not live.any():
                return lo
            mid = (lo + hi) // 2
            at = self.p.prefix_cost(params, mid)[0] >= x
            hi = np.where(live & at, mid, hi)
            lo = np.where(live & ~at, mid + 1, lo)


def run_tick(p: Pass, tl: FastTimeline) -> None:
    TickWalk(p, tl).run()


RUNNERS = {"never": run_never, "always": run_always, "tick": run_tick}


# Leaf tables up to which a cached guest keeps its passes: 2^16 tables is
# 128 GiB of 4K pages, and a few dozen MiB of pass arrays.
PASS_CACHE_TABLES = 1 << 16


class GuestCache:
    """Built guests, kept by what determines them, for a caller that
    simulates many scenarios of one VM shape (a sweep batch): the population
    draw does not depend on the strategy, vCPUs, lock mode or scheduling.
    Holds at most ``size`` guests (the most recently used)."""

    KEY = (
        "paging_levels",
        "host_phys_bits",
        "guest_memory",
        "page_size",
        "populated_ratio",
        "accessed_ratio",
        "dirty_ratio",
        "seed",
    )

    def __init__(self, size: int = 2):
        self.size = size
        self.guests: dict[tuple, Guest] = {}

    def get(self, scenario: Scenario) -> Guest:
        key = tuple(getattr(scenario, f) for f in self.KEY)
        guest = self.guests.pop(key, None) or Guest.build(scenario)
        self.guests[key] = guest  # most recent last
        while len(self.guests) > self.size:
            del self.guests[next(iter(self.guests))]
        return guest


def simulate_fast(scenario: Scenario, cm: CostModel, guests: GuestCache | None = None) -> ZapResult:
    guest = guests.get(scenario) if guests is not None else Guest.build(scenario)
    costs = Costs(scenario, cm)
    tl = FastTimeline(scenario, cm)
    run = RUNNERS[scenario.resched]
    totals = {"leaf_zapped": 0, "accessed": 0, "dirty": 0, "tables": 0, "ops": 0}
    max_op = max_op_leaves = 0
    cleared: int | None = None
    keep = guests is not None and len(guest.counts.present) <= PASS_CACHE_TABLES
    for zap_level in scenario.zap_level_numbers:
        key = (zap_level, cleared, costs.key)
        p = guest.passes.get(key) or Pass(guest, costs, zap_level, cleared)
        if keep:
            guest.passes[key] = p
        run(p, tl)
        for key in totals:
            totals[key] += p.totals[key]
        max_op = max(max_op, p.max_op)
        max_op_leaves = max(max_op_leaves, p.max_op_leaves)
        if p.kind != "skip":
            cleared = zap_level
    tl.leaf_zapped = totals["leaf_zapped"]
    tl.tables_freed = totals["tables"]
    tl.removed_entries_scanned = ENTRIES * totals["tables"]
    tl.accessed_writebacks = totals["accessed"]
    tl.dirty_writebacks = totals["dirty"]
    tl.ops = totals["ops"]
    tl.max_op_ps, tl.max_op_leaves = max_op, max_op_leaves
    return tl.result()
