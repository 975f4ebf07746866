"""A pass under ``resched=never``: no yield, so the pass is one stretch of
the RCU hold, charged in one step."""

from __future__ import annotations

from .timeline import FastTimeline
from .zap_pass import Pass


def run_never(p: Pass, tl: FastTimeline) -> None:
    t = p.totals
    tl.advance(p.visits * p.costs.visit + t.body_ps, p.visits, t.tables, t.ops > 0)
