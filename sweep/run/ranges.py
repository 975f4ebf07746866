"""Which combinations of the grid go out next, and how many of them.

A range is a stretch of consecutive combinations: cells of one VM shape stay
together (they share a worker's GuestCache) and a range falls in one or two
partitions of the dataset.  For each new range the planner decides:

- where: in the middle of the largest stretch not yet handed out (at its
  start when that stretch is under three ranges long, and all of it when
  what would be left is a sliver: no range is cut smaller than it must),
  so that any prefix of the ranges spreads
  evenly over the grid, as a bit-reversed order of equal ranges would: small
  guests and large ones are sampled from the start, and the ETA sees both;
- how many: about ``target_s`` of a worker's time at the rate measured on the
  ranges done so far; ``FIRST`` before any is done (the first results come at
  once), at most ``GROWTH`` times the previous range (one cheap stretch of
  the grid does not make the next range huge), and at most a ``1 / cpus``
  share of what is left (guided self-scheduling: the ranges shrink toward the
  end, so that the workers finish together), but not below ``TAIL_S`` of a
  worker's time (a range shorter than that would cost the driver more than
  it could save at the end).

So the driver's work, a constant per range, is spread over about two seconds
of a worker's time, whatever the cells cost; and the ranges cannot be so
large that a CPU waits at the end.  A fixed ``size`` (``batch.size``)
replaces the second answer: the ranges are then the multiples of ``size``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

FIRST = 16  # combinations per range until one has completed
GROWTH = 8  # a range is at most this many times the previous one
TARGET_S = 2.0  # a range's worker time, at least
TAIL_S = 0.1  # the last ranges' worker time, at least
# A bound on the ranges the driver handles per second: many CPUs make longer
# ranges rather than more of them (1000 CPUs: 20 s ranges, 50 a second).
MAX_RANGES_PER_S = 50


@dataclass
class RangePlanner:
    """Hands out the ranges of ``total`` combinations for ``cpus`` workers."""

    total: int
    cpus: int
    size: int | None = None  # fixed combinations per range; None: sized by time
    # Not handed out: (-length, lo, hi), so the largest (then the earliest) comes first.
    _gaps: list[tuple[int, int, int]] = field(init=False, repr=False)
    _left: int = field(init=False)  # combinations not handed out
    _last: int = field(init=False, default=FIRST)  # the previous range's size
    _measured: int = field(init=False, default=0)  # combinations of completed ranges ...
    _seconds: float = field(init=False, default=0.0)  # ... and their workers' time

    def __post_init__(self) -> None:
        self._gaps = [(-self.total, 0, self.total)] if self.total > 0 else []
        self._left = max(0, self.total)

    @property
    def target_s(self) -> float:
        return max(TARGET_S, self.cpus / MAX_RANGES_PER_S)

    @property
    def left(self) -> int:
        """Combinations not handed out yet."""
        return self._left

    def next_range(self) -> tuple[int, int] | None:
        """The next range (lo, hi), or None when every combination is out."""
        if not self._gaps:
            return None
        want = self._size()
        _, lo, hi = heapq.heappop(self._gaps)
        take = min(want, hi - lo)
        if self.size:  # the multiple of size nearest the middle
            start = lo + (hi - lo) // self.size // 2 * self.size
        elif hi - lo < 3 * want:  # short: from its start, and no sliver after it either
            start = lo
            if hi - lo <= want + max(FIRST, want // 4):
                take = hi - lo
        else:  # in the middle: each side keeps at least ``want``
            start = lo + (hi - lo - want) // 2
        for a, b in ((lo, start), (start + take, hi)):
            if b > a:
                heapq.heappush(self._gaps, (a - b, a, b))
        self._left -= take
        self._last = take
        return start, start + take

    def completed(self, combinations: int, seconds: float) -> None:
        """A range of ``combinations`` took its worker ``seconds``."""
        self._measured += combinations
        self._seconds += max(0.0, seconds)

    def _size(self) -> int:
        if self.size:
            return self.size
        share = max(FIRST, -(-self._left // max(1, self.cpus)))
        want = FIRST
        if self._seconds > 0:  # the measured rate's target_s worth, at most GROWTH times more
            rate = self._measured / self._seconds
            want = min(GROWTH * self._last, round(min(rate * self.target_s, self.total)))
            share = max(share, round(min(rate * TAIL_S, self.total)))
        return max(1, min(want, share))
