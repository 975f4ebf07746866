"""A pass's walk as a sequence of pieces with running sums: what the
``tick`` walk searches for the visit where the next yield falls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from ..geometry import pages_per_spte, table_span
from .arrays import running

if TYPE_CHECKING:
    from .zap_pass import Pass


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
        root, bottom, guest, visit = p.root, p.bottom.level, p.guest, p.costs.visit
        tables = p.bottom.tables
        nb = len(tables)
        visits = p.visits
        b_cost, b_ops, b_tables = p.table_costs()
        if bottom == root:  # one bottom table, the root, and nothing above it
            return cls(
                head=0,
                level=np.full(1, root, dtype=np.int8),
                ss=np.zeros(1, dtype=bool),
                bidx=np.zeros(1, dtype=np.int32),
                cum_cost=running(b_cost),
                cum_tables=running(b_tables),
                cum_ops=running(b_ops),
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
        pos = None if full else first[np.searchsorted(parents, tables >> 9)] + (tables & 511)

        ss = np.ones(m, dtype=bool)
        ss[first] = False
        # Entries above level B+1: each goes in front of the compound pieces
        # of its subtree, i.e. of the first level-(B+1) table at or after its
        # GFN (the GFN is aligned to a level-(B+1) table span).
        up_gfn, up_level, up_ss = [], [], []
        for level in range(parent_level + 1, root + 1):
            up = guest.exist[level]
            n = guest.visited(level)
            j = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
            up_gfn.append(np.repeat(up * table_span(level), n) + j * pages_per_spte(level))
            up_level.append(np.full(len(j), level, dtype=np.int8))
            up_ss.append(j > 0)
        gfn = np.concatenate(up_gfn) if up_gfn else np.zeros(0, dtype=np.int64)
        up_level = np.concatenate(up_level) if up_level else np.zeros(0, dtype=np.int8)
        up_ss = np.concatenate(up_ss) if up_ss else np.zeros(0, dtype=bool)
        order = np.argsort(gfn * 8 + (root - up_level), kind="stable")  # parent first
        gfn, up_level, up_ss = gfn[order], up_level[order], up_ss[order]
        at = np.append(first, m)[np.searchsorted(parents, gfn // table_span(parent_level))]

        count = m + len(at)
        level = np.empty(count, dtype=np.int8)
        ss_all = np.empty(count, dtype=bool)
        bidx = np.empty(count, dtype=np.int32)
        _merge_layout(m, parent_level, ss, full, pos_or_none(pos), nb, at, up_level, up_ss,
                      level, ss_all, bidx)  # fmt: skip

        def merged_running(bottom_values: np.ndarray, head_value: int) -> np.ndarray:
            out = np.empty(count + 1, dtype=np.int64)
            _merge_running(bidx, bottom_values, head_value, out)
            return out

        return cls(
            head=1,
            level=level,
            ss=ss_all,
            bidx=bidx,
            cum_cost=merged_running(b_cost, visit),
            cum_tables=merged_running(b_tables, 0) if b_tables.any() else None,
            cum_ops=merged_running(b_ops, 0) if with_ops else None,
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


_NO_POS = np.zeros(0, dtype=np.int64)


def pos_or_none(pos: np.ndarray | None) -> np.ndarray:
    return _NO_POS if pos is None else pos.astype(np.int64, copy=False)


@njit(cache=True)
def _merge_layout(m, parent_level, ss, full, pos, nb, at, up_level, up_ss, level, ss_all, bidx):
    """The pieces' level, step-side flag and bottom table, in walk order:
    the m compound pieces (bottom table b at compound position pos[b], or
    b itself when ``full``), with upper entry i in front of compound
    piece at[i] (np.insert, for sorted at, without a mask pass over 8M)."""
    u, b, out = 0, 0, 0
    for c in range(m + 1):
        while u < len(at) and at[u] == c:
            level[out], ss_all[out], bidx[out] = up_level[u], up_ss[u], -1
            out += 1
            u += 1
        if c == m:
            break
        level[out], ss_all[out] = parent_level, ss[c]
        if full:
            bidx[out] = c
        elif b < nb and pos[b] == c:
            bidx[out] = b
            b += 1
        else:
            bidx[out] = -1
        out += 1


@njit(cache=True)
def _merge_running(bidx, bottom_values, head_value, out):
    """Running sums over the pieces of head_value plus the bottom table's value."""
    total = np.int64(0)
    out[0] = 0
    for k in range(len(bidx)):
        total += head_value
        if bidx[k] >= 0:
            total += bottom_values[bidx[k]]
        out[k + 1] = total
