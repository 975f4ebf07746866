"""What a reader of a report sees: the RCU-hold heatmap per paging depth with its
empty cells explained, a readable colour scale, a run that did not complete
said so first, a report that says what it replaced, and ``--compare``."""

from __future__ import annotations

import json

import polars as pl
import pytest
from report_data import GIB, MS, TIB, S, layout_rows, row, write_dataset

from sweep.report import cli as report_cli
from sweep.report import plots, summary
from sweep.report.compare import (
    TERMINAL_COLUMNS,
    compare,
    side,
    terminal_compare,
    verdict_changes,
)
from sweep.report.render import empty_cell_reason, incomplete_note

SEED_RULES = [
    {"paging_levels": 4, "zap_levels": "upstream"},
    {"flush_on_yield": False, "vcpus": 416},
]


def _seedlike(path, root_5_hold_s: float = 259) -> None:
    rows = []
    for depth, hold in ((4, 7 * S), (5, int(root_5_hold_s * S))):
        for flush in (False, True):
            for vcpus in (1, 416):
                if not flush and vcpus == 416:
                    continue  # excluded
                for mem, scale in ((GIB, 1), (TIB, 1024)):
                    rows.append(
                        row(paging_levels=depth, strategy="root", flush_on_yield=flush,
                            vcpus=vcpus, guest_memory=mem, max_op_ns=hold * scale // 1024,
                            max_rcu_hold_ns=hold * scale // 1024,
                            rcu_stall=hold * scale // 1024 >= 21 * S)
                    )  # fmt: skip
    write_dataset(rows, path / "results")
    manifest = {"status": "complete", "results_dir": "results", "grid": {"exclude": SEED_RULES}}
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_the_heatmap_is_per_paging_depth(tmp_path):
    _seedlike(tmp_path)
    grid = summary.rcu_hold_grid(tmp_path)
    hold = {(r["paging_levels"], r["flush_on_yield"], r["vcpus"]): r["worst_max_rcu_hold_ns"]
            for r in grid.to_dicts()}  # fmt: skip
    assert hold[4, False, 1] == 7 * S and hold[5, False, 1] == 259 * S  # not 259 s everywhere
    assert (4, False, 416) not in hold


def test_empty_heatmap_cells_say_why():
    why = empty_cell_reason({"grid": {"exclude": SEED_RULES}})
    cell = {"paging_levels": 4, "flush_on_yield": True, "vcpus": 1, "dirty_ratio": 0.0}
    assert why({**cell, "flush_on_yield": False, "vcpus": 416, "strategy": "root"}) == "excluded"
    assert why({**cell, "strategy": "upstream"}) == "excluded"  # the seed's rule
    assert why({**cell, "strategy": "512G,root"}) == "invalid"  # needs 5-level paging
    assert empty_cell_reason(None)({**cell, "strategy": "upstream"}) == "= per_level"
    assert why({**cell, "paging_levels": 5, "strategy": "root"}) == "no cells"


def test_the_heatmap_draws_excluded_cells_as_such(tmp_path):
    _seedlike(tmp_path)
    grid = summary.rcu_hold_grid(tmp_path)
    seen = []

    def why(cell):
        seen.append(cell)
        return empty_cell_reason({"grid": {"exclude": SEED_RULES}})(cell)

    plots.plot_rcu_hold_heatmap(grid, tmp_path / "h.png", 21.0, why)
    asked = {(c["paging_levels"], c["flush_on_yield"], c["vcpus"]) for c in seen}
    assert asked == {(4, False, 416), (5, False, 416)}  # the excluded cells, and only those
    assert (tmp_path / "h.png").stat().st_size > 10_000


def test_with_kernels_the_heatmap_has_a_row_per_kernel_and_a_column_per_trigger(tmp_path):
    from report_data import KERNEL_SCHEMA, kernel_rows

    write_dataset(kernel_rows(), tmp_path / "results", schema=KERNEL_SCHEMA)
    grid = summary.rcu_hold_grid(tmp_path)
    layout = plots.heatmap_layout(grid)
    # Each kernel zaps with its own strategy: it names the row, the strategy its panel.
    assert (layout.rows, layout.columns) == (("kernel",), ("paging_levels", "trigger"))
    assert layout.fixed == {"flush_on_yield": False}
    rules = [{"kernel": "6.9", "trigger": "vm_destroy"}]
    asked = {}

    def why(cell):
        asked[cell["kernel"], cell["trigger"]] = cell
        return empty_cell_reason({"grid": {"exclude": rules}})(cell)

    plots.plot_rcu_hold_heatmap(grid, tmp_path / "h.png", 21.0, why)
    assert set(asked) == {("6.9", "vm_destroy"), ("6.13", "vm_destroy"), (None, "vm_destroy")}
    assert "strategy" not in asked["6.9", "vm_destroy"]
    assert why(asked["6.9", "vm_destroy"]) == "excluded"
    assert why(asked["6.13", "vm_destroy"]) == "no cells"
    # Strategies given beside the kernels: a row per kernel and strategy.
    both = kernel_rows() + [{**r, "strategy": "two_pass"} for r in kernel_rows()]
    write_dataset(both, tmp_path / "both" / "results", schema=KERNEL_SCHEMA)
    layout = plots.heatmap_layout(summary.rcu_hold_grid(tmp_path / "both"))
    assert layout.rows == ("kernel", "strategy")


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(666e-6, 1e-3), (671e-6, 1.19e-3), (1e-6, 300.0), (0.9, 1.1), (5e-3, 5e-3 * 1.6)],
)
def test_the_colour_scale_has_readable_ticks(lo, hi):
    import numpy as np

    vmin, vmax = plots.color_range(np.array([lo, hi]))
    ticks = plots.log_ticks(vmin, vmax)
    assert 3 <= len(ticks) <= 8, ticks
    assert all(vmin * 0.999 <= t <= vmax * 1.001 for t in ticks)
    assert len({plots.fmt_seconds(t) for t in ticks}) == len(ticks)  # distinct labels


# A run that did not complete ------------------------------------------------------------


def test_an_incomplete_run_says_so_first(tmp_path, capsys):
    _seedlike(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest.update(status="interrupted", stopped_by="SIGTERM", grid_combinations=192,
                    counts={"combinations": 40}, command="zapsweep hydra.run.dir=X")  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert report_cli.main([str(tmp_path)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        "Incomplete run (status interrupted, stopped by SIGTERM): 12 cells in the dataset, 40 "
        "of the grid's 192 combinations covered. Resume with zapsweep hydra.run.dir=X. Every "
        "figure below is of these cells only."
    )
    html = (tmp_path / "report.html").read_text()
    assert html.index("class='note'") < html.index("<h2>Verdicts</h2>")
    assert incomplete_note({"status": "complete"}, 3) is None
    assert "still running, or its driver was killed" in incomplete_note({"status": "running"}, 3)
    assert "(status `failed`: OSError: disk full): 3 cells" in incomplete_note(
        {"status": "failed", "error": "OSError: disk full"}, 3
    )


def test_a_report_says_what_it_replaces_and_out_keeps_it(tmp_path, capsys):
    _seedlike(tmp_path)
    assert report_cli.main([str(tmp_path)]) == 0
    assert "replaced" not in capsys.readouterr().out
    before = (tmp_path / "report.md").read_text()
    assert report_cli.main([str(tmp_path), "--budget-ms", "5", "--out", str(tmp_path / "b5")]) == 0
    assert "replaced" not in capsys.readouterr().out
    assert (tmp_path / "report.md").read_text() == before
    assert "under 5 ms" in (tmp_path / "b5" / "report.md").read_text()
    assert report_cli.main([str(tmp_path), "--budget-ms", "5"]) == 0
    assert "replaced the report written " in capsys.readouterr().out


def test_the_run_may_follow_group_by_columns(tmp_path, capsys):
    _seedlike(tmp_path)
    assert report_cli.main(["--group-by", "strategy", "paging_levels", str(tmp_path)]) == 0
    assert pl.read_parquet(tmp_path / "summary.parquet").columns[:2] == [
        "strategy",
        "paging_levels",
    ]


# --compare --------------------------------------------------------------------------------


def _two_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _seedlike(a)
    _seedlike(b, root_5_hold_s=15)  # the same guests, a cheaper model: no stall at 1TiB
    for path, name in ((a, "seed-2022"), (b, "lab-2026")):
        m = json.loads((path / "manifest.json").read_text())
        m["cost_model"] = {"name": name, "version": 1}
        (path / "manifest.json").write_text(json.dumps(m))
        t = pl.read_parquet(path / "results" / "**" / "*.parquet", hive_partitioning=True)
        (path / "results").rename(path / "old")
        write_dataset(t.with_columns(cost_model=pl.lit(name)).to_dicts(), path / "results")
    return a, b


def test_compare_leads_with_the_verdict_changes_and_names_both_sides(tmp_path, capsys):
    a, b = _two_runs(tmp_path)
    changes = [
        "largest guest under 100 ms, 5-level 4K root: none -> 1GiB",
        "largest stall-free guest, 5-level 4K root: 1GiB -> 1TiB",
    ]
    assert verdict_changes(a, b, 100.0) == changes
    assert side(b, "B").describe().startswith("B (cost model lab-2026 v1; engine reference")
    assert report_cli.main(["--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(
        f"A = {a} (cost model seed-2022 v1; engine reference, engine version"
    )
    assert lines[1].startswith(f"B = {b} (cost model lab-2026 v1;")
    assert lines[2:5] == ["Verdict changes, A -> B (budget 100 ms):", *(f"  {c}" for c in changes)]
    table = out.split("\n\n")[1].splitlines()
    assert table[0].split()[:4] == ["paging", "page", "strategy", "worst"]
    assert len(table) == 3 and max(map(len, table)) <= TERMINAL_COLUMNS
    assert f"full table (12 groups, 21 columns): {b / 'compare.md'}" in out
    text = (b / "compare.md").read_text()
    assert "## Verdict changes" in text and "| root | 5 | 4K | 1TiB |" in text


def test_the_terminal_table_fits_100_columns_with_long_strategy_names(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    long = "4K,2M,1G,512G,root"
    rows = [row(paging_levels=5, strategy=s, zap_levels=s, max_op_ns=123456 * S)
            for s in ("root", long, "2M,1G,512G,root")]  # fmt: skip
    write_dataset(rows, a / "results")
    write_dataset([dict(r, max_op_ns=7 * MS) for r in rows], b / "results")
    text = terminal_compare(a, b)
    assert max(len(x) for x in text.splitlines()) <= TERMINAL_COLUMNS, text
    assert "RCU hold A" in text


def test_a_verdict_at_the_largest_guest_tested_is_a_lower_bound(tmp_path):
    """B tests larger guests than A: A's "every guest was fine" is no verdict change."""
    a, b = tmp_path / "a", tmp_path / "b"
    small = [row(strategy="two_pass", guest_memory=m, max_op_ns=20 * MS) for m in (GIB, TIB)]
    write_dataset(small, a / "results")
    write_dataset([*small, row(strategy="two_pass", guest_memory=16 * TIB, max_op_ns=20 * MS)],
                  b / "results")  # fmt: skip
    assert verdict_changes(a, b, 100.0) == [
        "largest guest under 100 ms, 4-level 4K two_pass: 1TiB (largest tested) -> 16TiB",
        "largest stall-free guest, 4-level 4K two_pass: 1TiB (largest tested) -> 16TiB",
    ]
    assert verdict_changes(b, a, 100.0) == [
        "largest guest under 100 ms, 4-level 4K two_pass: 16TiB -> 1TiB (largest tested)",
        "largest stall-free guest, 4-level 4K two_pass: 16TiB -> 1TiB (largest tested)",
    ]


@pytest.mark.parametrize(
    "seconds, text",
    [(4.5e-7, "450 ns"), (0.0158, "15.8 ms"), (259, "259 s"), (9999, "9999 s"),
     (1e4, "2.78 h"), (1e6, "11.6 d"), (float("nan"), "—")],
)  # fmt: skip
def test_long_times_read_in_hours_and_days(seconds, text):
    assert plots.fmt_seconds(seconds) == text


def test_compare_keeps_memory_layouts_apart(tmp_path):
    """Both runs hold flat and q35 guests: each layout is its own verdict group."""
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(layout_rows(), a / "results")
    faster = [dict(r, max_op_ns=r["max_op_ns"] // 4) for r in layout_rows()]
    write_dataset(faster, b / "results")
    changes = verdict_changes(a, b, 100.0)
    assert "largest guest under 100 ms, 4-level q35 split 0 1G root: 1TiB -> 4TiB" in changes
    assert "largest guest under 100 ms, 4-level q35 split 0.2 1G root: none -> 1TiB" in changes
    assert not any("flat" in c and "two_pass" in c for c in changes)  # unchanged
    text = terminal_compare(a, b)
    assert text.splitlines()[0].split()[:4] == ["paging", "layout", "page", "strategy"]
    assert "q35 split 0.2" in text and max(map(len, text.splitlines())) <= TERMINAL_COLUMNS


def test_compare_keeps_kernels_and_triggers_apart(tmp_path):
    from report_data import KERNEL_SCHEMA, kernel_rows

    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(kernel_rows(), a / "results", schema=KERNEL_SCHEMA)
    calmer = [dict(r, max_rcu_hold_ns=min(r["max_rcu_hold_ns"], 10 * S), rcu_stall=False)
              for r in kernel_rows()]  # fmt: skip
    write_dataset(calmer, b / "results", schema=KERNEL_SCHEMA)
    changes = verdict_changes(a, b, 100.0)
    assert "largest stall-free guest, kernel 5.15, memslot deletion: 4-level 4K root: " \
        "64GiB -> 16TiB" in changes  # fmt: skip
    assert "largest stall-free guest, kernel 5.15, VM destruction: 4-level 4K root: " \
        "1TiB -> 16TiB" in changes  # fmt: skip
    assert "largest stall-free guest, no kernel preset, memslot deletion: 4-level 4K root: " \
        "none -> 16TiB" in changes  # fmt: skip
    assert side(a, "A").describe().endswith("kernels 5.15, 6.9, 6.13; 12 cells)")
    assert compare(a, b).columns[:2] == ["kernel", "trigger"]
    text = terminal_compare(a, b)
    assert text.splitlines()[0].split()[:5] == ["kernel", "trigger", "paging", "page", "strategy"]
    assert max(map(len, text.splitlines())) <= TERMINAL_COLUMNS, text


def test_compare_of_two_kernels_that_zap_differently_is_per_shape(tmp_path):
    """A 6.6 run (two_pass) against a 6.13 run (per_level, upstream at 5 levels):
    no strategy in common, so the groups are paging depth and page size."""
    a, b = tmp_path / "a", tmp_path / "b"
    from report_data import KERNEL_SCHEMA

    def rows(kernel, strategies, op_ns):
        return [row(kernel=kernel, trigger="memslot", paging_levels=depth, strategy=s,
                    guest_memory=mem, max_op_ns=op_ns(mem), max_rcu_hold_ns=op_ns(mem))
                for depth, s in zip((4, 5), strategies, strict=True)
                for mem in (64 * GIB, 16 * TIB)]  # fmt: skip

    write_dataset(rows("6.6", ("two_pass", "two_pass"), lambda m: 15 * MS if m < TIB else 200 * MS),
                  a / "results", schema=KERNEL_SCHEMA)  # fmt: skip
    write_dataset(rows("6.13", ("per_level", "upstream"), lambda m: MS),
                  b / "results", schema=KERNEL_SCHEMA)  # fmt: skip
    assert verdict_changes(a, b, 100.0) == [
        "largest guest under 100 ms, 4-level 4K two_pass -> per_level: 64GiB -> 16TiB",
        "largest guest under 100 ms, 5-level 4K two_pass -> upstream: 64GiB -> 16TiB",
    ]
    assert "; kernel 6.6; 4 cells)" in side(a, "A").describe()
    text = terminal_compare(a, b)
    assert "two_pass→upstream" in text and max(map(len, text.splitlines())) <= TERMINAL_COLUMNS
