"""``zapsweep-report``: the worst-case latency report of a run, or two runs compared.

zapsweep-report outputs/2024-01-01/12-00-00
zapsweep-report outputs/.../results --budget-ms 50 --group-by strategy paging_levels
zapsweep-report RUN --out elsewhere/            # keep the report already in RUN
zapsweep-report --compare RUN_A RUN_B [--output compare.md]

A user's error (a path that is no run, an unknown column, a bad number, a
directory that cannot be written) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import polars as pl

from sweep.console import OneLineParser, positive_float, user_error
from sweep.dataset import read_manifest

from .compare import compare, default_output, side, terminal_compare, verdict_changes
from .render import (
    DEFAULT_BUDGET_MS,
    DEFAULT_STALL_TIMEOUT_S,
    display,
    headline_table,
    incomplete_note,
    markdown_table,
    write_report,
)
from .summary import DEFAULT_GROUP_KEYS, Results, open_results, row_count

PROG = "zapsweep-report"


def parser() -> OneLineParser:
    p = OneLineParser(
        prog=PROG,
        description="Worst-case latency report of a zapsweep run (summary.parquet, report.md, "
        "report.html, plots/), or two runs side by side with --compare.",
    )
    p.add_argument("path", nargs="?", type=Path, help="a run directory or a results/ dataset")
    p.add_argument(
        "--budget-ms",
        type=positive_float,
        default=DEFAULT_BUDGET_MS,
        help="latency budget for one operation, in ms (default %(default)s)",
    )
    p.add_argument(
        "--stall-timeout-s",
        type=positive_float,
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
        "--out",
        type=Path,
        metavar="DIR",
        help="write the report into DIR instead of the run directory (which keeps its own)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A", "B"),
        help="compare two runs: the verdicts that changed, then each group's worst cases",
    )
    p.add_argument(
        "--output",
        type=Path,
        help="with --compare: where the full table goes (.parquet, .csv, or markdown "
        "otherwise; default compare.md in B's run directory)",
    )
    return p


def run_compare(
    a: Path, b: Path, group_keys: Sequence[str], output: Path | None, budget_ms: float
) -> None:
    df = compare(a, b, group_keys)
    sides = f"A = {side(a, str(a)).describe()}\nB = {side(b, str(b)).describe()}"
    changes = verdict_changes(a, b, budget_ms)
    heading = f"Verdict changes, A -> B (budget {budget_ms:g} ms)"
    change_text = "\n".join(f"  {c}" for c in changes) if changes else "  none"
    print(f"{sides}\n{heading}:\n{change_text}\n")
    print(terminal_compare(a, b))
    target = output or default_output(b)
    if target.suffix == ".parquet":
        df.write_parquet(target)
    elif target.suffix == ".csv":
        df.write_csv(target)
    else:
        bullets = "\n".join(f"- {c}" for c in changes) or "- none"
        text = (
            f"# zapsweep comparison\n\n{sides.replace(chr(10), chr(10) * 2)}\n\n"
            f"## {heading}\n\n{bullets}\n\n## Every group ({df.height})\n\n"
            f"{markdown_table(display(df))}\n"
        )
        target.write_text(text, encoding="utf-8")
    print(f"\nfull table ({df.height} groups, {df.width} columns): {target}")


def _warn_skipped(results: Results) -> None:
    """Name each file the integrity check refused; the report reads around it."""
    for bad in results.skipped:
        print(
            f"{PROG}: skipped bad results file {bad.path} ({bad.reason}); it is left "
            "in place: run zapsweep into this run directory to quarantine it and run its "
            "cells again",
            file=sys.stderr,
        )


def _previous(results: Results) -> str | None:
    files = results.run.report_files()
    if not files:
        return None
    when = datetime.fromtimestamp(max(p.stat().st_mtime for p in files)).isoformat(
        sep=" ", timespec="seconds"
    )
    return f"replaced the report written {when} in {results.run.report_dir}"


def _report(args, keys: tuple[str, ...]) -> None:
    results = open_results(args.path)
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(
                f"--out {args.out}: cannot create it ({e.strerror or e}); allowed a writable "
                "directory"
            ) from None
        results = dataclasses.replace(
            results, run=dataclasses.replace(results.run, report_to=args.out)
        )
    results.scan()  # no file passed the check: one line says so, before any warning
    _warn_skipped(results)
    note = incomplete_note(read_manifest(results.run), row_count(results))
    if note:
        print(note.replace("**", "").replace("`", ""))
    replaced = _previous(results)
    written = write_report(results, args.budget_ms, args.stall_timeout_s, keys)
    print(headline_table(results, args.budget_ms))
    for name, p in written.items():
        print(f"{name}: {p}")
    if replaced:
        print(f"({replaced}; zapsweep-report RUN --out DIR keeps it)")


def _is_path(word: str) -> bool:
    """Is this word, last after --group-by, the run directory (rather than a column)?"""
    from sweep.dataset import ROW_SCHEMA

    return Path(word).exists() or word not in ROW_SCHEMA.names


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    trailing = args.group_by[-1] if args.group_by else None
    if args.path is None and not args.compare and trailing and _is_path(trailing):
        args.path = Path(args.group_by.pop())  # RUN after --group-by's columns
        if not args.group_by:
            p.error("--group-by needs at least one column before the run directory")
    keys = tuple(args.group_by) if args.group_by else DEFAULT_GROUP_KEYS
    if args.output is not None and not args.compare:
        p.error("--output goes with --compare A B (a report's directory is --out DIR)")
    if not args.compare and args.path is None:
        p.error("give a run directory, or --compare A B")
    if args.compare and args.path is not None:
        p.error(f"give either a run directory ({args.path}) or --compare A B, not both")
    try:
        if args.compare:
            run_compare(*args.compare, keys, args.output, args.budget_ms)
        else:
            _report(args, keys)
    except BrokenPipeError:  # `zapsweep-report RUN | head`: the files are written
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (FileNotFoundError, ValueError) as e:
        return user_error(PROG, str(e))
    except pl.exceptions.PolarsError as e:
        return user_error(PROG, f"cannot read the results: {e}")
    except OSError as e:
        where = e.filename or "the report's directory"
        return user_error(
            PROG, f"cannot write {where}: {e.strerror or e}; allowed a writable directory (--out)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
