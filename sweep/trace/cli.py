"""``zapsweep-trace``: one zap as a Chrome trace (Perfetto, chrome://tracing).

zapsweep-trace guest_memory=64GiB zap_levels=two_pass resched=always --out zap.json
zapsweep-trace --cell 3f2a9c0d41e7b655 outputs/2026-12-01/12-00-00 --out cell.json
zapsweep-trace --cell 3f2a outputs/... resched=tick --out cell-tick.json   # the cell, changed
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine import (
    DEFAULT_COST_MODEL,
    ENGINES,
    RESULT_FIELDS,
    SCENARIO_FIELDS,
    Scenario,
    ScenarioError,
    format_memory,
    load_cost_model,
    zap_events,
)
from sweep.console import OneLineParser, user_error

from .cell import CellNotFound, find_cell
from .chrome import KEEP_HOLDS, KEEP_OPERATIONS, write_trace

PROG = "zapsweep-trace"
SETTINGS = ("engine", "cost_model")
KEYS = (*SCENARIO_FIELDS, *SETTINGS)


class UsageError(ValueError):
    pass


def text_field(key: str) -> bool:
    """Whether the grid's axis of ``key`` holds text (a kernel's name, a page size)."""
    import types
    import typing

    from sweep.run.inventory import field_type

    kind = field_type(key) if key in SCENARIO_FIELDS else str
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return str in typing.get_args(kind)
    return kind is str


def parse_assignments(args: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE in the grid's value syntax (Hydra's override grammar):
    ``guest_memory=64GiB``, ``zap_levels=2M,root`` or ``[2M,root]``,
    ``flush_on_yield=true``, ``host_phys_bits=null``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    parser = OverridesParser.create()
    out: dict[str, Any] = {}
    for arg in args:
        key = arg.split("=", 1)[0]
        if "=" not in arg or key not in KEYS:
            raise UsageError(f"{arg!r}: expected KEY=VALUE with KEY one of {list(KEYS)}")
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception as err:  # Hydra's own message says where the syntax broke
            raise UsageError(f"{arg!r}: {err}") from err
        value = override.value()
        if text_field(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = arg.split("=", 1)[1].strip()  # kernel=6.6 names the preset "6.6"
        if isinstance(value, ChoiceSweep):
            if key != "zap_levels" or not value.simple_form:
                raise UsageError(f"{arg!r}: one value per key (this is a trace of one zap)")
            value = ",".join(map(str, value.list))  # zap_levels=2M,root: the level list
        out[key] = value
    return out


def at_least_one(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: allowed an integer >= 1")
    return value


def check_out(path: Path) -> None:
    """Refuse an --out the trace cannot be written to, before the zap is simulated."""
    parent = path.parent
    if path.is_dir():
        raise UsageError(
            f"--out {path} is a directory; allowed a file path, e.g. {path / 'trace.json'}"
        )
    if not parent.is_dir():
        raise UsageError(
            f"--out {path}: no directory {parent}; allowed a file in a writable directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"--out {path}: {parent} is not writable; allowed a file in a writable directory"
        )


def parser() -> OneLineParser:
    p = OneLineParser(
        prog=PROG,
        description="Trace one root zap: a Chrome trace-event JSON file (open it in "
        "https://ui.perfetto.dev or chrome://tracing) with a slice per RCU hold and per pass, "
        "the longest operations nested in their holds, and instants for yields and TLB "
        "flushes, in simulated time.",
        epilog=f"KEY is a Scenario field ({', '.join(SCENARIO_FIELDS)}), a key not given "
        f"taking the Scenario's default (with none: a {describe(Scenario())}), or engine "
        f"({'|'.join(ENGINES)}, default fast) or cost_model (a name or a YAML path; default "
        f"{DEFAULT_COST_MODEL}).",
    )
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE", help="the scenario")
    p.add_argument(
        "--cell",
        nargs=2,
        metavar=("CELL_ID", "RUN_DIR"),
        help="start from a cell of a run (its id, or the start of it); KEY=VALUE changes it",
    )
    p.add_argument(
        "--out", type=Path, default=Path("trace.json"), metavar="FILE", help="default %(default)s"
    )
    p.add_argument(
        "--holds",
        type=at_least_one,
        metavar="N",
        default=KEEP_HOLDS,
        help="RCU holds listed one by one, the longest (default %(default)s); the others are "
        "aggregated",
    )
    p.add_argument(
        "--operations",
        type=at_least_one,
        metavar="N",
        default=KEEP_OPERATIONS,
        help="longest operations shown (default %(default)s)",
    )
    return p


def describe(s: Scenario) -> str:
    kernel = f", kernel {s.kernel} ({s.trigger})" if s.kernel else ""
    return (
        f"{s.strategy} zap of a {format_memory(s.guest_memory)} {s.page_size} guest, "
        f"{s.paging_levels}-level paging, resched={s.resched}{kernel}"
    )


def holds_line(path: Path) -> str:
    """How the trace shows the holds, from its metadata."""
    import json

    holds = json.loads(path.read_text())["otherData"]["zapsweep"]["holds"]
    text = f"{holds['total']:,} RCU hold{'s' if holds['total'] != 1 else ''}"
    if holds["listed"] == holds["total"]:
        return text + ", each a slice"
    parts = [f"{holds['listed']:,} listed, the longest", f"{holds['aggregated']:,} aggregated"]
    if holds["summarized"]:
        parts.append(f"{holds['summarized']:,} summarized by pass")
    return f"{text} ({', '.join(parts)})"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check_out(args.out)
        given = parse_assignments(args.assignments)
        settings = {k: given.pop(k) for k in SETTINGS if k in given}
        row = None
        if args.cell:
            cell = find_cell(args.cell[1], args.cell[0])
            fields = {**cell.scenario.to_dict(), **given}
            engine = settings.get("engine", cell.engine)
            model = load_cost_model(settings.get("cost_model", cell.cost_model))
            row = cell.row if not given and not settings else None
        else:
            fields = given
            engine = settings.get("engine", "fast")
            model = load_cost_model(settings.get("cost_model", DEFAULT_COST_MODEL))
        scenario = Scenario(**fields)
        events = zap_events(scenario, engine, model, max_operations=args.operations)
        events.check()
        path = write_trace(events, args.out, args.holds, args.operations)
    except (UsageError, ScenarioError, CellNotFound, FileNotFoundError) as err:
        return user_error(PROG, str(err))
    except OSError as err:  # the run's files, or --out, as the simulation ended
        where = err.filename or args.out
        return user_error(PROG, f"cannot read or write {where}: {err.strerror or err}")
    r = events.result
    print(
        f"zapsweep-trace: wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {describe(scenario)}"
        f" ({engine} engine, {model.name}); {holds_line(path)}; the "
        f"{min(args.operations, len(events.operations))} longest of {r.visits:,} operations"
    )
    print(
        f"result: worst operation {r.max_op_ns:,} ns, longest RCU hold {r.max_rcu_hold_ns:,} ns"
        f"{' (RCU stall)' if r.rcu_stall else ''}, total {r.total_ns:,} ns, {r.yields:,} yields"
    )
    if row is not None:
        differ = [f for f in RESULT_FIELDS if f in row and row[f] != getattr(r, f)]
        if differ:
            print(f"zapsweep-trace: the run's row differs in {differ}", file=sys.stderr)
        else:
            print("the same result as the run's row")
    print("open it in https://ui.perfetto.dev (Open trace file) or chrome://tracing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
