"""Built guests kept by what determines them, for callers that simulate many
scenarios of one VM shape."""

from __future__ import annotations

from ..scenario import Scenario
from .guest import Guest


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
        "layout",
        "memslots",
        "split_ratio",
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
