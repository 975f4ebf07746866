"""Progress of a sweep: a tqdm bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    """Counts grid combinations resolved (run, skipped or dropped) out of ``total``.

    Shows cells run, cells failed, cells/s and an ETA.
    """

    def __init__(self, total: int, bar: bool | None = None, log_interval_s: float = 10.0):
        self.total = total
        self.resolved = 0
        self.ok = 0
        self.failed = 0
        self.start = time.monotonic()
        self.log_interval_s = log_interval_s
        self._last_log = self.start
        use_bar = sys.stderr.isatty() if bar is None else bar
        self.bar = tqdm(total=total, unit="comb", dynamic_ncols=True) if use_bar else None

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return (self.ok + self.failed) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        elapsed = time.monotonic() - self.start
        if not self.resolved or elapsed <= 0:
            return None
        return (self.total - self.resolved) * elapsed / self.resolved

    def advance(self, resolved: int, ok: int = 0, failed: int = 0) -> None:
        self.resolved += resolved
        self.ok += ok
        self.failed += failed
        if self.bar is not None:
            self.bar.set_postfix(cells=self.ok + self.failed, failed=self.failed, refresh=False)
            self.bar.update(resolved)
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            log.info("%s", self.line())

    def line(self) -> str:
        eta = self.eta_s()
        eta_text = "?" if eta is None else f"{eta:.0f}s"
        return (
            f"{self.resolved}/{self.total} combinations, {self.ok + self.failed} cells run, "
            f"{self.failed} failed, {self.rate:.1f} cells/s, ETA {eta_text}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        log.info("done: %s", self.line())
