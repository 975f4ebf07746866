"""write_report's files, the terminal headline, --compare and the CLI."""

from __future__ import annotations

import json
import math
import re

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from matplotlib.image import imread
from report_data import MS, TIB, known_rows, row, shapes_rows, write_dataset

from sweep import report
from sweep.report import cli as report_cli
from sweep.report import summary

MANIFEST = {"grid": "seed", "engine": "reference", "git_commit": "abc123", "cells": 17}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run dir: the shapes and known datasets together, and a manifest."""
    d = tmp_path_factory.mktemp("run")
    write_dataset(shapes_rows() + known_rows(), d / "results", files=3)
    (d / "manifest.json").write_text(json.dumps(MANIFEST))
    return d


@pytest.fixture(scope="module")
def written(run):
    return report.write_report(run)


def test_write_report_files(run, written):
    assert written["summary"] == run / "summary.parquet"
    assert written["report_md"] == run / "report.md"
    assert written["report_html"] == run / "report.html"
    for name in ("latency_vs_memory", "rcu_hold_heatmap", "cost_vs_latency"):
        assert written[name] == run / "plots" / f"{name}.png"
    assert all(p.is_file() for p in written.values())


def test_summary_parquet_matches_summarize(written, run):
    on_disk = pl.read_parquet(written["summary"])
    assert on_disk.equals(summary.summarize(run))
    # known_rows: 4 groups; shapes_rows: root 5 (1, 4 and 4 dirty, 16, 64 TiB), two_pass 4
    # (1, 1 with 8 vCPUs, 4, 16 TiB), upstream 3, root 2M 2
    assert on_disk.height == 18
    assert on_disk["errors"].sum() == 5 and on_disk["cells"].sum() == 8 + 13


def test_polars_duckdb_pyarrow_read_summary_alike(written):
    path = str(written["summary"])
    by_polars = pl.read_parquet(path).rows(named=True)
    by_arrow = pq.read_table(path).to_pylist()
    con = duckdb.connect()
    cur = con.execute("SELECT * FROM read_parquet(?)", [path])
    names = [c[0] for c in cur.description]
    by_duckdb = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    con.close()
    assert list(by_polars[0]) == list(by_arrow[0]) == names
    assert len(by_polars) == len(by_arrow) == len(by_duckdb) == 18

    def same(x, y):
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x):
            return math.isnan(y)
        return x == y and type(x) is type(y)

    for p, a, d in zip(by_polars, by_arrow, by_duckdb, strict=True):
        for k in names:
            assert same(p[k], a[k]) and same(p[k], d[k]), (k, p[k], a[k], d[k])


def test_report_markdown_content(written):
    md = written["report_md"].read_text()
    assert (
        "- **5-level paging, 4K pages, 16TiB guest:** worst operation under 100 ms with "
        "two_pass (90 ms), upstream (90 ms); over 100 ms with root (800 ms). "
        "RCU stall with root." in md
    )
    assert (
        "- **5-level paging, 2M pages, 4TiB guest:** worst operation under 100 ms with "
        "no strategy; over 100 ms with root (130 ms). RCU stall with root." in md
    )
    assert (
        "- **4-level paging, 4K pages, 1GiB guest:** worst operation under 100 ms with "
        "root (40 ms), two_pass (7 ms), 2M,root (3 ms). RCU stall with two_pass." in md
    )
    # the headline row of 5-level 4K two_pass: 4 cells, safe to 16 TiB, median price 1.2x
    assert re.search(
        r"\| 5 \| 4K \| two_pass \| 4 \| 0 \| 16TiB \| 90 ms \| 90 ms \| 0 \| 16TiB \| 16TiB "
        r"\| 1\.20× \|",
        md,
    )
    assert ": 26 cells (21 results, 5 errors). Latency budget 100 ms, RCU stall timeout 21 s." in md
    assert "## Errors (5)" in md and "RuntimeError: simulated failure" in md
    assert "| manifest: git_commit | abc123 |" in md
    for png in ("latency_vs_memory", "rcu_hold_heatmap", "cost_vs_latency"):
        assert f"](plots/{png}.png)" in md


def test_report_html_is_self_contained(written):
    text = written["report_html"].read_text()
    assert text.count("src='data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)
    assert "<link" not in text and "<script" not in text
    assert "<strong>5-level paging, 4K pages, 16TiB guest:</strong>" in text
    assert "abc123" in text


@pytest.mark.parametrize("name", ["latency_vs_memory", "rcu_hold_heatmap", "cost_vs_latency"])
def test_plots_are_not_blank(written, name):
    img = imread(written[name])
    h, w = img.shape[:2]
    assert h >= 300 and w >= 300
    rgb = (img[..., :3] * 255).round().astype(np.uint32)
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert len(colours) > 50  # lines, markers, text and colour maps, not an empty canvas
    assert written[name].stat().st_size > 20_000


def test_report_next_to_results_and_without_manifest(tmp_path):
    write_dataset(known_rows(), tmp_path / "results")
    out = report.write_report(tmp_path / "results", budget_ms=25, group_keys=["strategy"])
    assert out["report_md"] == tmp_path / "report.md"
    s = pl.read_parquet(out["summary"])
    assert s.columns == ["strategy", *summary.SUMMARY_COLUMNS]
    md = out["report_md"].read_text()
    assert "| manifest.json | absent |" in md
    # budget 25 ms: root's worst is 40 ms at 1 GiB
    assert "over 25 ms with root (40 ms)" in md


def test_report_of_errors_only(tmp_path):
    write_dataset([row(status="error", error="boom")], tmp_path / "results")
    out = report.write_report(tmp_path)
    md = out["report_md"].read_text()
    assert "## Errors (1)" in md and "boom" in md and "- no results" in md
    assert all(p.is_file() for p in out.values())


def test_headline_table(run):
    text = report.headline_table(run)
    lines = text.splitlines()
    assert "under 100 ms up to" in lines[1]
    root_5_4k = next(x for x in lines if re.search(r"│\s+5 ┆\s+4K ┆\s+root ┆", x))
    assert re.search(r"4 ┆\s+2 ┆\s+16TiB ┆\s+800 ms ┆\s+30 s ┆\s+1 ┆\s+1TiB ┆\s+4TiB", root_5_4k)
    assert "5-level paging, 4K pages, 16TiB guest: worst operation under 100 ms" in text
    assert "5 cell(s) failed" in text


def _compare_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(
        [row(strategy="root", max_op_ns=40 * MS), row(strategy="two_pass")], a / "results"
    )
    write_dataset(
        [
            row(strategy="root", max_op_ns=10 * MS),
            row(strategy="two_pass", max_op_ns=2 * MS),
            row(strategy="two_pass", max_op_ns=500 * MS, status="error"),
            row(strategy="per_level", guest_memory=TIB),
        ],
        b / "results",
    )
    return a, b


def test_compare(tmp_path):
    a, b = _compare_runs(tmp_path)
    df = report.compare(a, b)
    g = {(r["strategy"], r["guest_memory"]): r for r in df.to_dicts()}
    assert list(g) == [("root", 1 << 30), ("two_pass", 1 << 30), ("per_level", TIB)]
    root = g["root", 1 << 30]
    assert (root["worst_max_op_ns_a"], root["worst_max_op_ns_b"]) == (40 * MS, 10 * MS)
    assert (root["worst_max_op_change_ns"], root["worst_max_op_ratio"]) == (-30 * MS, 0.25)
    two = g["two_pass", 1 << 30]  # the 500 ms error in B does not count
    assert (two["worst_max_op_ns_b"], two["worst_max_op_change_ns"]) == (2 * MS, 1 * MS)
    assert (two["errors_a"], two["errors_b"], two["cells_b"]) == (0, 1, 1)
    new = g["per_level", TIB]
    assert (new["cells_a"], new["worst_max_op_ns_a"], new["worst_max_op_change_ns"]) == (
        None,
        None,
        None,
    )


def test_cli(tmp_path, capsys):
    a, b = _compare_runs(tmp_path)
    assert report_cli.main([str(a), "--budget-ms", "20"]) == 0
    out = capsys.readouterr().out
    assert "under 20 ms up to" in out and "over 20 ms with root (40 ms)" in out
    assert (a / "report.html").is_file() and (a / "plots" / "cost_vs_latency.png").is_file()

    target = tmp_path / "cmp.md"
    assert report_cli.main(["--compare", str(a), str(b), "--output", str(target)]) == 0
    out = capsys.readouterr().out
    root = next(x for x in out.splitlines() if re.match(r"\s+4\s+4K\s+root\s", x))
    assert root.split() == ["4", "4K", "root", "40", "ms", "10", "ms", "0.25×", "1", "ms",
                            "1", "ms", "0→0"]  # fmt: skip
    assert f"full table (3 groups, 21 columns): {target}" in out
    assert "| root | 4 | 4K | 1GiB | 0.5 | 1 | no | tick | write |" in target.read_text()
    assert "-30 ms | 0.25× |" in target.read_text()

    assert report_cli.main([str(tmp_path / "missing")]) == 2
    assert "no run directory" in capsys.readouterr().err
    assert report_cli.main([str(a), "--group-by", "strategy", "bogus"]) == 2


def test_report_of_kernels_has_their_section_and_plot(tmp_path):
    from report_data import KERNEL_SCHEMA, kernel_rows

    write_dataset(kernel_rows(), tmp_path / "results", schema=KERNEL_SCHEMA)
    written = report.write_report(tmp_path)
    md = written["report_md"].read_text()
    assert "## Kernels" in md and "**On 5.15, memslot deletion:**" in md
    assert md.index("## Kernels") < md.index("## Verdicts")
    png = written["kernel_latency_vs_memory"]
    assert png.exists() and png.stat().st_size > 20_000
    assert "alt='kernel_latency_vs_memory'" in written["report_html"].read_text()


def test_cli_groups_by_kernel(tmp_path, capsys):
    from report_data import KERNEL_SCHEMA, kernel_rows

    write_dataset(kernel_rows(), tmp_path / "results", schema=KERNEL_SCHEMA)
    assert report_cli.main([str(tmp_path), "--group-by", "kernel", "trigger"]) == 0
    out = capsys.readouterr().out
    assert "On 6.13, memslot deletion" in out
    groups = pl.read_parquet(tmp_path / "summary.parquet")
    assert groups.columns[:2] == ["kernel", "trigger"]
    assert groups["kernel"].to_list()[:4] == ["5.15", "5.15", "6.9", "6.13"]
