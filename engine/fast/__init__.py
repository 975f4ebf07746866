"""The fast engine: the reference engine's results from aggregate structure.

The guest's page table is held in aggregate (``guest``: which tables exist
per level, leaf counts per leaf table, subtree sums).  A strategy's passes
run in order (``zap``); each pass (``zap_pass``) walks the tables at levels
down to its bottom level, whose entries (``bottom``) are leaves to skip,
leaves to clear, or child tables to remove.  The scenario's ``resched``
policy picks the walk: ``never`` and ``always`` are closed forms over
per-level counts and per-table aggregates, ``tick`` places each yield by
searching the pass's running cost (``pieces``) and reads only the tables
where yields fall.

Everything is integer picoseconds, so results equal the reference engine's
exactly.
"""

from .cache import GuestCache
from .events import record_fast
from .zap import simulate_fast

__all__ = ["GuestCache", "record_fast", "simulate_fast"]
