"""A pass under ``resched=always`` (a contended CPU), in closed form.

Every check that may yield does: the visit of every step side yields (the
walk made progress), and no other visit does (a step down, and the restart's
walk, leave next_last_level_gfn where the yield left it).  So the pass's
chains (see zap_pass) are its RCU holds: the first chain continues the hold
the pass began in, every later one starts with a yield and its restart, and
each but the last ends with the aborted visit of the next step side, and a
flush there if it cleared something (flush_on_yield).

A hold that starts with a restart walks down one visit per level from the
root to its chain end, so it holds ``(root - level + 2)`` visits with the
aborted one, plus its chain end's body: the longest hold and the largest
pending free are maxima over chain ends (``Pass.chain_end_extremes``), and
counts and time are sums over levels.  Only the first chain (whose hold may
have begun before the pass) and the last (which stays open) are walked,
through the Timeline.
"""

from __future__ import annotations

from .timeline import FastTimeline
from .zap_pass import Pass


def run_always(p: Pass, tl: FastTimeline) -> None:
    visit, root = p.costs.visit, p.root
    walk = p.walk_counts()
    first = p.first_chain()
    first_visits = root - first.level + 1  # entry 0 of each level down to the chain end
    tl.advance(
        first_visits * visit + first.entry.body,
        first_visits,
        first.entry.freed,
        first.entry.cleared,
    )
    if walk.chain_ends == 1:  # no step side: the whole pass is that chain
        return
    last = p.last_chain()
    last_visits = root - last.level + 1  # its restart's ancestors and its chain
    last_cost = last_visits * visit + last.entry.body

    tl.clock += visit  # the first step side: aborted, and the first yield
    tl.visits += 1
    tl.flush_and_yield()

    between = walk.chain_ends - 2  # holds between the first yield and the last
    if between:
        flushing = tl.scenario.flush_on_yield
        hold, freed = p.chain_end_extremes(tl.flush_ps if flushing else 0, last)
        tl.max_hold_ps = max(tl.max_hold_ps, hold)
        tl.pending_free_peak_tables = max(tl.pending_free_peak_tables, freed)
        # Each clear but the first chain's and the last's ends a hold that
        # flushes (with flush_on_yield the first yield flushed what was pending).
        inner_ops = p.totals.ops - first.entry.cleared - last.entry.cleared
        flushes = inner_ops if flushing else 0
        visits = walk.visits + walk.restart_visits + (walk.chain_ends - 1)
        cost = visits * visit + p.totals.body_ps + (walk.chain_ends - 1) * tl.cm.yield_ps
        first_cost = first_visits * visit + first.entry.body + visit + tl.cm.yield_ps
        tl.clock += cost - first_cost - last_cost + flushes * tl.flush_ps
        tl.visits += visits - first_visits - 1 - last_visits
        tl.yields += between
        tl.tlb_flushes += flushes
        tl.hold_start = tl.resched_cleared = tl.clock
        tl.hold_tables = 0
        # With flush_on_yield the last of these yields flushed what was pending.
        tl.flush_pending = not flushing and (tl.flush_pending or inner_ops > 0)
    tl.advance(last_cost, last_visits, last.entry.freed, last.entry.cleared)
