"""ZapResult: what one simulated root zap reports (spec section 7)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ZapResult:
    """Counts and times of one root zap. Times are integer nanoseconds
    (floor of the engine's exact picosecond clock).

    ``ops`` is an addition to the spec's names: SPTEs cleared directly by the
    walk (one per operation that cleared something). With it every event the
    cost model charges can be derived from this record (``engine.events``).
    ``leaves_4k``, ``leaves_2m`` and ``leaves_1g`` (spec section 12) are the
    present leaves cleared at each level; they sum to ``leaf_zapped``.
    ``roots_zapped`` counts the roots torn down (2 with an SMM root);
    ``total_ns`` is the CPU time summed over them, ``wall_ns`` the time
    until the last is done: the same when one task zaps them one after
    another, the slowest root when parallel workers do.
    """

    visits: int
    yields: int
    leaf_zapped: int
    tables_freed: int
    removed_entries_scanned: int
    accessed_writebacks: int
    dirty_writebacks: int
    tlb_flushes: int
    max_op_leaves: int
    max_op_ns: int
    max_rcu_hold_ns: int
    total_ns: int
    rcu_stall: bool
    pending_free_peak_bytes: int
    ops: int
    leaves_4k: int
    leaves_2m: int
    leaves_1g: int
    roots_zapped: int
    wall_ns: int

    def to_dict(self) -> dict:
        # Not dataclasses.asdict: its deep copy costs more than a sweep row.
        return {name: getattr(self, name) for name in RESULT_FIELDS}


RESULT_FIELDS = tuple(f.name for f in fields(ZapResult))
