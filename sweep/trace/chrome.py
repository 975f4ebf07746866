"""A zap's events (``engine.ZapEvents``) as a Chrome trace-event JSON file,
which Perfetto (ui.perfetto.dev) and ``chrome://tracing`` open.

One process, the zap, on one timeline in simulated time (``ts`` in µs from
the moment the zap takes RCU and mmu_lock, to the nanosecond), three tracks:

- ``zap and passes``: the whole zap, and a slice per pass of its strategy;
- ``RCU holds and operations``: a slice per RCU hold, the longest
  operations nested in the holds they ran in;
- ``yields and TLB flushes``: an instant event per yield and per flush.

A zap with more holds than ``keep_holds`` keeps the longest of them (and
every hold that holds a kept operation); each run of holds between two kept
ones becomes one aggregated slice, whose arguments say how many holds,
yields and flushes it stands for and the longest of them.  What was dropped,
and why, is in the trace's metadata (``otherData.zapsweep``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from engine import ENGINE_VERSION, ZapEvents, format_memory
from engine.events import Operation
from sweep.dataset.schema import scenario_columns

KEEP_HOLDS = 2000
KEEP_OPERATIONS = 500
PID = 1
ZAP_TRACK, HOLD_TRACK, EVENT_TRACK = 1, 2, 3
TRACK_NAMES = {
    ZAP_TRACK: "zap and passes",
    HOLD_TRACK: "RCU holds and operations",
    EVENT_TRACK: "yields and TLB flushes",
}


def us(ps: int) -> float:
    """A clock value for ``ts``/``dur``: microseconds, floored to the nanosecond
    (so a slice nested in another stays inside it)."""
    return (int(ps) // 1000) / 1000


def slice_event(name: str, cat: str, tid: int, start_ps: int, end_ps: int, args: dict) -> dict:
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "pid": PID,
        "tid": tid,
        "ts": us(start_ps),
        "dur": round(us(end_ps) - us(start_ps), 3),
        "args": args,
    }


def instant_event(name: str, cat: str, at_ps: int, args: dict) -> dict:
    return {
        "name": name,
        "cat": cat,
        "ph": "i",
        "s": "t",
        "pid": PID,
        "tid": EVENT_TRACK,
        "ts": us(at_ps),
        "args": args,
    }


def kept_holds(ev: ZapEvents, keep: int, ops: list[Operation]) -> np.ndarray:
    """Which listed holds are kept: the ``keep`` longest (of equals the
    earliest), and those an operation kept runs in."""
    holds = ev.holds
    n = len(holds)
    kept = np.zeros(n, dtype=bool)
    if n <= keep:
        kept[:] = True
        return kept
    order = np.lexsort((np.arange(n), -holds.duration_ps))
    kept[order[:keep]] = True
    starts = np.array([op.start_ps for op in ops], dtype=np.int64)
    at = np.searchsorted(holds.start_ps, starts, side="right") - 1
    inside = (at >= 0) & (starts < holds.end_ps[np.maximum(at, 0)])
    kept[at[inside]] = True
    return kept


def ends_with_yield(ev: ZapEvents, i: int) -> bool:
    """Every listed hold ends with a yield, but the zap's last one."""
    return int(ev.holds.end_ps[i]) != ev.total_ps


def hold_events(ev: ZapEvents, kept: np.ndarray) -> tuple[list[dict], dict[str, int]]:
    """The kept holds as slices with their yields and flushes as instants;
    each run of the others as one aggregated slice.  Returns the events and
    what was aggregated."""
    h = ev.holds
    out = [event for i in np.flatnonzero(kept).tolist() for event in listed_hold(ev, i)]
    runs = aggregated_runs(ev, kept)
    dropped = {
        "holds": int((~kept).sum()),
        "yields": sum(e["args"]["yields"] for e in runs),
        "tlb_flushes": int(h.flushed[~kept].sum()),
        "aggregated_slices": len(runs),
    }
    return out + runs, dropped


def listed_hold(ev: ZapEvents, i: int) -> list[dict]:
    """Hold ``i`` as a slice, and the flush and the yield that end it."""
    h = ev.holds
    start, end = int(h.start_ps[i]), int(h.end_ps[i])
    stall = end - start >= ev.scenario.rcu_stall_timeout_ps
    yielded = ends_with_yield(ev, i)
    hold = slice_event(
        "RCU hold (stall)" if stall else "RCU hold",
        "rcu",
        HOLD_TRACK,
        start,
        end,
        {
            "hold": i + 1,
            "duration_ns": (end - start) // 1000,
            "pass": ev.passes[int(h.pass_index[i])].name,
            "tables_queued_for_free": int(h.tables[i]),
            "ended_by": "a yield" if yielded else "the end of the zap",
            "rcu_stall": bool(stall),
        },
    )
    if stall:
        hold["cname"] = "terrible"
    out = [hold]
    if bool(h.flushed[i]):
        out.append(instant_event("TLB flush", "flush", end - ev.flush_ps, {"hold": i + 1}))
    if yielded:
        out.append(instant_event("yield", "yield", end, {"hold": i + 1}))
    return out


def aggregated_runs(ev: ZapEvents, kept: np.ndarray) -> list[dict]:
    """One slice per run of holds not kept, between two kept ones."""
    h = ev.holds
    dropped = ~kept
    if not dropped.any():
        return []
    edges = np.diff(np.concatenate([[0], dropped.astype(np.int8), [0]]))
    firsts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # runs [first, end)
    counts = ends - firsts
    at = np.concatenate([[0], np.cumsum(counts)[:-1]])  # each run's start among the dropped

    def per_run(values: np.ndarray, ufunc=np.add) -> list[int]:
        return ufunc.reduceat(values[dropped].astype(np.int64), at).tolist()

    durations = h.duration_ps
    longest, held = per_run(durations, np.maximum), per_run(durations)
    yields, flushes = per_run(h.end_ps != ev.total_ps), per_run(h.flushed)
    stalls = per_run(durations >= ev.scenario.rcu_stall_timeout_ps)
    return [
        slice_event(
            f"{count} shorter RCU holds",
            "rcu.aggregated",
            HOLD_TRACK,
            int(h.start_ps[i]),
            int(h.end_ps[j - 1]),
            {
                "holds": count,
                "first_hold": i + 1,
                "longest_ns": longest[k] // 1000,
                "held_ns": held[k] // 1000,
                "yields": yields[k],
                "tlb_flushes": flushes[k],
                "rcu_stalls": stalls[k],
            },
        )
        for k, (i, j, count) in enumerate(
            zip(firsts.tolist(), ends.tolist(), counts.tolist(), strict=True)
        )
    ]


def summarized_events(ev: ZapEvents) -> list[dict]:
    return [
        slice_event(
            f"{s.holds} RCU holds (pass {ev.passes[s.pass_index].name}, summarized)",
            "rcu.summarized",
            HOLD_TRACK,
            s.start_ps,
            s.end_ps,
            {
                "holds": s.holds,
                "longest_ns": s.longest_ps // 1000,
                "rcu_stall": s.longest_ps >= ev.scenario.rcu_stall_timeout_ps,
            },
        )
        for s in ev.summarized
    ]


def operation_args(ev: ZapEvents, op: Operation) -> dict[str, Any]:
    return {
        "duration_ns": op.duration_ps // 1000,
        "pass": ev.passes[op.pass_index].name,
        "spte_level": op.level,
        "gfn": hex(op.gfn),
        "gpa": hex(op.gfn << 12),
        "leaves": op.leaves,
        "tables_freed": op.tables_freed,
    }


def operation_name(op: Operation) -> str:
    if op.tables_freed:
        return f"clear level-{op.level} SPTE, remove {op.tables_freed} tables"
    if op.leaves:
        return f"clear level-{op.level} leaf"
    return "visit"


def zap_slices(ev: ZapEvents) -> list[dict]:
    s, r = ev.scenario, ev.result
    out = [
        slice_event(
            f"root zap: {s.strategy}",
            "zap",
            ZAP_TRACK,
            0,
            ev.total_ps,
            {
                "strategy": s.strategy,
                "zap_levels": ",".join(s.zap_levels),
                "total_ns": r.total_ns,
                "yields": r.yields,
                "max_rcu_hold_ns": r.max_rcu_hold_ns,
                "max_op_ns": r.max_op_ns,
                "rcu_stall": r.rcu_stall,
            },
        )
    ]
    for i, p in enumerate(ev.passes):
        out.append(
            slice_event(
                f"pass {p.name}",
                "pass",
                ZAP_TRACK,
                p.start_ps,
                p.end_ps,
                {"pass_index": i, "zap_level": p.zap_level, "visits": p.visits, "yields": p.yields},
            )
        )
    return out


def metadata_events(ev: ZapEvents) -> list[dict]:
    s = ev.scenario
    kernel = f", kernel {s.kernel} ({s.trigger})" if s.kernel else ""
    title = (
        f"zapsweep: {s.strategy} zap of a {format_memory(s.guest_memory)} {s.page_size} guest, "
        f"{s.paging_levels}-level, resched={s.resched}{kernel} ({ev.engine} engine, "
        f"{ev.cost_model.name})"
    )
    out = [{"name": "process_name", "ph": "M", "pid": PID, "args": {"name": title}}]
    for tid, name in TRACK_NAMES.items():
        out.append(
            {"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": name}}
        )
        out.append(
            {
                "name": "thread_sort_index",
                "ph": "M",
                "pid": PID,
                "tid": tid,
                "args": {"sort_index": tid},
            }
        )
    return out


def trace_json(
    ev: ZapEvents, keep_holds: int = KEEP_HOLDS, keep_operations: int = KEEP_OPERATIONS
) -> dict[str, Any]:
    """The Chrome trace of ``ev``: the JSON object format, with metadata."""
    placed = [op for op in ev.operations if op.start_ps is not None][:keep_operations]
    unplaced = [op for op in ev.operations if op.start_ps is None][:keep_operations]
    kept = kept_holds(ev, keep_holds, placed)
    holds, dropped = hold_events(ev, kept)
    ops = [
        slice_event(
            operation_name(op),
            "operation",
            HOLD_TRACK,
            op.start_ps,
            op.start_ps + op.duration_ps,
            {"rank": rank + 1, **operation_args(ev, op)},
        )
        for rank, op in enumerate(placed)
    ]
    events = metadata_events(ev) + zap_slices(ev) + holds + summarized_events(ev) + ops
    r = ev.result
    meta = {
        "clock": "simulated time: ts in microseconds since the zap took RCU and mmu_lock",
        "scenario": {k: v for k, v in scenario_columns(ev.scenario).items()},
        "engine": ev.engine,
        "engine_version": ENGINE_VERSION,
        "cost_model": {"name": ev.cost_model.name, "version": ev.cost_model.version},
        "result": r.to_dict(),
        "total_ps": ev.total_ps,
        "holds": {
            "total": ev.hold_count,
            "listed": int(kept.sum()),
            "aggregated": dropped["holds"],
            "summarized": sum(s.holds for s in ev.summarized),
            "longest_ns": ev.longest_hold_ps // 1000,
        },
        "dropped": {
            **dropped,
            "why": (
                f"holds beyond the {keep_holds} longest (and those of the operations shown) "
                "are aggregated: each run of them between two listed holds is one slice"
            ),
            "summarized_passes": [ev.passes[s.pass_index].name for s in ev.summarized],
            "operations_not_shown": r.visits - len(ops),
            "operations_without_time": [
                {"duration_ns": op.duration_ps // 1000, **operation_args(ev, op)} for op in unplaced
            ],
        },
        "operations": {
            "total": r.visits,
            "shown": len(ops),
            "longest_ns": ev.operations[0].duration_ps // 1000,
        },
    }
    return {"traceEvents": events, "displayTimeUnit": "ns", "otherData": {"zapsweep": meta}}


def write_trace(
    ev: ZapEvents,
    path: str | Path,
    keep_holds: int = KEEP_HOLDS,
    keep_operations: int = KEEP_OPERATIONS,
) -> Path:
    path = Path(path)
    data = trace_json(ev, keep_holds, keep_operations)
    path.write_text(json.dumps(data, separators=(",", ":"), default=int) + "\n", encoding="utf-8")
    return path
