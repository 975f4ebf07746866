"""``zapsweep-report``: the worst-case latency report of a run, or two runs compared.

zapsweep-report outputs/2024-01-01/12-00-00
zapsweep-report outputs/.../results --budget-ms 50 --group-by strategy paging_levels
zapsweep-report --compare RUN_A RUN_B [--output compare.md]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .render import (
    DEFAULT_BUDGET_MS,
    DEFAULT_STALL_TIMEOUT_S,
    compare,
    display,
    fmt_plain,
    headline_table,
    markdown_table,
    split_constant,
    terminal_table,
    write_report,
)
from .summary import DEFAULT_GROUP_KEYS, open_results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zapsweep-report",
        description="Worst-case latency report of a zapsweep run (summary.parquet, report.md, "
        "report.html, plots/), or two runs side by side with --compare.",
    )
    p.add_argument("path", nargs="?", type=Path, help="a run directory or a results/ dataset")
    p.add_argument(
        "--budget-ms",
        type=float,
        default=DEFAULT_BUDGET_MS,
        help="latency budget for one operation, in ms (default %(default)s)",
    )
    p.add_argument(
        "--stall-timeout-s",
        type=float,
        default=DEFAULT_STALL_TIMEOUT_S,
        help="RCU stall timeout drawn on the plots, in s (default %(default)s)",
    )
    p.add_argument(
        "--group-by",
        nargs="+",
        metavar="COLUMN",
        default=None,
        help=f"summary group keys (default: {' '.join(DEFAULT_GROUP_KEYS)})",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A", "B"),
        help="compare two runs: each group's worst latency in A and B and its change",
    )
    p.add_argument(
        "--output",
        type=Path,
        help="with --compare: also write the comparison (.parquet, .csv, or markdown otherwise)",
    )
    return p


def run_compare(a: Path, b: Path, group_keys: Sequence[str], output: Path | None) -> None:
    df = compare(a, b, group_keys)
    shown, fixed = split_constant(df, group_keys)
    same = ", ".join(f"{k}={fmt_plain(v)}" for k, v in fixed.items())
    print(f"A = {a}\nB = {b}" + (f"\nin every group: {same}" if same else ""))
    print(terminal_table(display(shown)))
    if output is None:
        return
    if output.suffix == ".parquet":
        df.write_parquet(output)
    elif output.suffix == ".csv":
        df.write_csv(output)
    else:
        text = f"# zapsweep comparison\n\nA = `{a}`\n\nB = `{b}`\n\n{markdown_table(display(df))}\n"
        output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")


def _warn_skipped(results) -> None:
    """Name each file the integrity check refused; the report reads around it."""
    for bad in results.skipped:
        print(
            f"zapsweep-report: skipped bad results file {bad.path} ({bad.reason}); it is left "
            "in place: run zapsweep into this run directory to quarantine it and run its "
            "cells again",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    keys = tuple(args.group_by) if args.group_by else DEFAULT_GROUP_KEYS
    try:
        if args.compare:
            run_compare(*args.compare, keys, args.output)
            return 0
        if args.path is None:
            parser().error("give a run directory, or --compare A B")
        results = open_results(args.path)
        _warn_skipped(results)
        written = write_report(results, args.budget_ms, args.stall_timeout_s, keys)
        print(headline_table(results, args.budget_ms))
        for name, p in written.items():
            print(f"{name}: {p}")
    except (FileNotFoundError, ValueError) as e:
        print(f"zapsweep-report: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
