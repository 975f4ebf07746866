"""A pass under ``resched=tick``: need_resched is raised every interval of
zap time, and the next check that may yield does.

The work is in placing yields: each is found by searching the pass's
running cost (``Pieces``) for the first visit reached by a step side that
starts late enough, and only the bottom table where it falls is read; runs
of yields that each answer the next interval are proposed and checked many
at a time.
"""

from __future__ import annotations

import numpy as np

from ..geometry import PTES_PER_TABLE
from .arrays import running
from .timeline import FastTimeline
from .zap_pass import Pass

ENTRIES = PTES_PER_TABLE


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
            body, cleared, freed = self.p.bottom.entries(b)
            self.cache[b] = (
                running(body + self.visit),
                running(freed),
                running(cleared),
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
        self.tl.yield_and_restart(int(pc.level[k]) if pc.head and j == 0 else self.p.bottom.level)
        self.search = (k, j + 1) if j + 1 < pc.piece_visits(k, self.p.bottom.n) else (k + 1, 0)

    # Many yields at once --------------------------------------------

    def batch(self, size: int) -> int:
        """Propose the next yields assuming each answers the next interval
        and lands on a bottom entry of a full table, or on the head of the
        piece after one; accept the longest prefix for which that holds.
        Returns how many were taken."""
        p, tl, pc, visit, head = self.p, self.tl, self.pc, self.visit, self.pc.head
        bottom = p.bottom
        x0, boundary = self.target()
        flush = tl.flush_ps if self.flush else 0
        omega = visit + flush + tl.cm.yield_ps + (p.root - bottom.level) * visit
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
        ok[ok] = bottom.full(pc.bidx[kp[ok]])
        n = int(np.argmin(ok)) if not ok.all() else size
        if n == 0:
            return 0
        kp, x, emin, i = kp[:n], x[:n], emin[:n], i[:n]
        params = bottom.prefix_params(pc.bidx[kp])
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
            delta = int(pc.level[k]) - bottom.level
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
                fits[fits] = bottom.full(pc.bidx[kp[moved][fits]])
                if not fits.all():
                    n = int(moved[np.argmin(fits)])
                    moved = moved[moved < n]
                kp, x, i, e, lo, hi, short = (v[:n] for v in (kp, x, i, e, lo, hi, short))
                params = bottom.prefix_params(pc.bidx[kp])
                entry0 = pc.cum_cost[kp] + head * visit
                lo[moved], hi[moved] = 1, ENTRIES
            e = self.first_entries(params, lo, hi, x - entry0)
        if n == 0:
            return 0
        start, ops_in, freed_in = (v[:n] for v in bottom.prefix_cost(params, e))
        kp, e, i, short, entry0 = kp[:n], e[:n], i[:n], short[:n], entry0[:n]
        before = pc.at(kp)
        start = start + entry0
        tables_at = before[1] + freed_in
        ops_at = before[2] + ops_in
        j = head + e
        level = np.full(n, bottom.level, dtype=np.int64)
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
        more = jl + 1 < pc.piece_visits(kl, bottom.n)
        self.search = (kl, jl + 1) if more else (kl + 1, 0)
        return n

    def first_entries(
        self, params: tuple | None, lo: np.ndarray, hi: np.ndarray, x: np.ndarray
    ) -> np.ndarray:
        """Per proposal, the first bottom entry in [lo, hi) that starts at or
        after x (relative to entry 0), or hi: a vectorized binary search."""
        bottom = self.p.bottom
        lo, hi = bottom.window(params, lo, hi, x)
        while True:
            live = lo < hi
            if not live.any():
                return lo
            mid = (lo + hi) // 2
            at = bottom.prefix_cost(params, mid)[0] >= x
            hi = np.where(live & at, mid, hi)
            lo = np.where(live & ~at, mid + 1, lo)


def run_tick(p: Pass, tl: FastTimeline) -> None:
    TickWalk(p, tl).run()
