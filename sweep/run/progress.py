"""Progress of a sweep: a tqdm bar on a terminal, periodic log lines otherwise.

A line comes at least every ``log_interval_s``, whether or not a range
completed (the driver's loop polls: ``idle``).  Counts are labelled: the cells
this run made, and those already in the dataset when it started (a resume
skips them, so its combinations counter starts with a jump).  The ETA divides
the combinations still to run (the grid's remaining combinations less the
cells already there not yet met) by a rate smoothed over the last minutes:
counts and seconds both decay with time constant ``tau_s``, so one fast or
slow range moves it little, and a long wait with no result raises it.
"""

from __future__ import annotations

import logging
import math
import sys
import time

from tqdm import tqdm

log = logging.getLogger(__name__)

MIN_TAU_S = 60.0


def fmt_duration(s: float) -> str:
    """45 -> '45s', 125 -> '2m05s', 3725 -> '1h02m'."""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Counts grid combinations resolved (run, skipped or dropped) out of ``total``;
    ``already_done`` cells were in the dataset when the run started."""

    def __init__(
        self,
        total: int,
        bar: bool | None = None,
        log_interval_s: float = 10.0,
        already_done: int = 0,
    ):
        self.total = total
        self.already_done = already_done
        self.resolved = 0  # combinations, this run's and the resumed alike
        self.resumed = 0  # cells met that were already there
        self.ok = 0
        self.failed = 0
        self.in_flight = 0
        self.start = self._last_sample = self._last_log = time.monotonic()
        self.log_interval_s = log_interval_s
        self.tau_s = max(MIN_TAU_S, 6 * log_interval_s)
        self._work = 0.0  # decayed combinations run (not resumed) ...
        self._seconds = 0.0  # ... over decayed seconds
        use_bar = sys.stderr.isatty() if bar is None else bar
        self.bar = tqdm(total=total, unit="comb", dynamic_ncols=True) if use_bar else None

    # -- counting ------------------------------------------------------------------

    def _sample(self, work: int) -> float:
        now = time.monotonic()
        dt, self._last_sample = now - self._last_sample, now
        decay = math.exp(-dt / self.tau_s)
        self._work = self._work * decay + work
        self._seconds = self._seconds * decay + dt
        return now

    def advance(
        self, resolved: int, ok: int = 0, failed: int = 0, resumed: int = 0, in_flight: int = 0
    ) -> None:
        self.resolved += resolved
        self.resumed += resumed
        self.ok += ok
        self.failed += failed
        self.in_flight = in_flight
        self._report(self._sample(resolved - resumed))

    def idle(self, in_flight: int) -> None:
        """Nothing completed this poll: still report, at the interval."""
        self.in_flight = in_flight
        self._report(self._sample(0))

    # -- figures -------------------------------------------------------------------

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.start

    @property
    def rate(self) -> float:
        """Combinations run per second, smoothed (resumed ones cost nothing)."""
        return self._work / self._seconds if self._seconds > 0 else 0.0

    def remaining(self) -> int:
        """Combinations still to run: not resolved, and not among the cells already there."""
        still_there = max(0, self.already_done - self.resumed)
        return max(0, self.total - self.resolved - still_there)

    def eta_s(self) -> float | None:
        if self.resolved >= self.total:
            return 0.0
        rate = self.rate
        return None if rate <= 0 else self.remaining() / rate

    def line(self) -> str:
        eta = self.eta_s()
        cells = self.ok + self.failed
        pct = 100 * self.resolved / self.total if self.total else 100.0
        text = f"{self.resolved:,}/{self.total:,} combinations ({pct:.0f}%); this run: {cells:,} "
        text += f"cells ({self.failed:,} failed)"
        if self.already_done:
            text += f"; already there: {self.resumed:,} of {self.already_done:,} met"
        if self.in_flight:
            text += f"; {self.in_flight} range{'s' if self.in_flight > 1 else ''} in flight"
        text += f"; elapsed {fmt_duration(self.elapsed_s)}"
        if cells:
            text += f"; {cells / max(self.elapsed_s, 1e-9):.1f} cells/s"
        return text + f"; ETA {'?' if eta is None else fmt_duration(eta)}"

    # -- output ----------------------------------------------------------------------

    def _report(self, now: float) -> None:
        if self.bar is not None:
            postfix = {"cells": self.ok + self.failed, "failed": self.failed}
            if self.already_done:
                postfix["already_there"] = self.resumed
            postfix["in_flight"] = self.in_flight
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.n = self.resolved
            self.bar.refresh()
            return
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            log.info("%s", self.line())

    def close(self, quiet: bool = False) -> None:
        if self.bar is not None:
            self.bar.close()
        self.in_flight = 0
        if not quiet:
            log.info("done: %s", self.line())
