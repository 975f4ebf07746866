"""Aggregates, verdicts and price of safety against hand-computed numbers.

The datasets are written with pyarrow (tests/report_data.py), not by the engine.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from report_data import (
    GIB,
    MS,
    SCHEMA,
    TIB,
    S,
    known_rows,
    layout_rows,
    row,
    shapes_rows,
    write_dataset,
)

from sweep import report
from sweep.report import summary


def _groups(rows: list[dict]) -> dict:
    return {r["strategy"]: r for r in rows}


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """A run dir with four summary groups (paging 4, 4K, 1 GiB, default fields)."""
    run = tmp_path_factory.mktemp("known")
    write_dataset(known_rows(), run / "results")
    return run


def test_summary_aggregates(known):
    df = summary.summarize(known)
    assert df.columns == [*summary.DEFAULT_GROUP_KEYS, *summary.SUMMARY_COLUMNS]
    assert df["strategy"].to_list() == ["root", "two_pass", "per_level", "2M,root"]
    g = _groups(df.to_dicts())

    root = g["root"]
    assert (root["cells"], root["errors"], root["stalls"]) == (4, 0, 0)
    assert root["worst_max_op_ns"] == 40 * MS
    # linear p99 of 10,20,30,40 ms: 30 + 0.97 * 10
    assert root["p99_max_op_ns"] == pytest.approx(39.7 * MS, rel=1e-12)
    assert root["median_max_op_ns"] == 25 * MS
    assert root["worst_max_rcu_hold_ns"] == 45 * MS
    assert root["median_total_ns"] == 250 * MS
    assert (root["median_visits"], root["median_yields"]) == (191.5, 63.5)
    assert root["guest_memory"] == GIB and root["paging_levels"] == 4

    two = g["two_pass"]  # the two errors hold 999 s, a stall, 1 visit, 9999 yields
    assert (two["cells"], two["errors"], two["stalls"]) == (3, 2, 1)
    assert two["worst_max_op_ns"] == 7 * MS
    assert two["p99_max_op_ns"] == pytest.approx(6.98 * MS, rel=1e-12)
    assert two["median_max_op_ns"] == 6 * MS
    assert two["worst_max_rcu_hold_ns"] == 22 * S
    assert two["median_total_ns"] == 200 * MS
    assert (two["median_visits"], two["median_yields"]) == (1000, 100)

    err = g["per_level"]
    assert (err["cells"], err["errors"], err["stalls"], err["vcpus"]) == (0, 1, 0, 8)
    for c in ("worst_max_op_ns", "p99_max_op_ns", "median_total_ns", "worst_max_rcu_hold_ns"):
        assert err[c] is None

    custom = g["2M,root"]
    assert (custom["cells"], custom["worst_max_op_ns"], custom["p99_max_op_ns"]) == (
        1,
        3 * MS,
        3 * MS,
    )


def test_summary_group_keys_configurable(known):
    df = summary.summarize(known / "results", group_keys=["strategy"])
    assert df.columns == ["strategy", *summary.SUMMARY_COLUMNS]
    g = _groups(df.to_dicts())
    assert (g["root"]["cells"], g["two_pass"]["cells"], g["per_level"]["cells"]) == (4, 3, 0)
    assert g["two_pass"]["errors"] == 2

    by_depth = summary.summarize(known, group_keys=["paging_levels"])
    assert by_depth.to_dicts()[0]["cells"] == 8
    assert by_depth.to_dicts()[0]["errors"] == 3
    assert by_depth.to_dicts()[0]["worst_max_op_ns"] == 40 * MS

    with pytest.raises(ValueError, match="nonexistent"):
        summary.summarize(known, group_keys=["strategy", "nonexistent"])


def test_missing_dataset(tmp_path):
    with pytest.raises(FileNotFoundError):
        summary.summarize(tmp_path / "nope")
    (tmp_path / "results").mkdir()
    with pytest.raises(FileNotFoundError, match="no Parquet files"):
        summary.summarize(tmp_path)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """5-level guests of 1, 4 and 16 TiB for the verdicts and the price of safety."""
    run = tmp_path_factory.mktemp("shapes")
    write_dataset(shapes_rows(), run / "results", files=3)
    return run


def _verdicts(run, budget_ms=100.0) -> dict:
    df = summary.verdicts(run, budget_ms)
    return {(r["paging_levels"], r["page_size"], r["strategy"]): r for r in df.to_dicts()}


def test_verdicts(shapes):
    v = _verdicts(shapes)
    order = [("4K", "root"), ("4K", "two_pass"), ("4K", "upstream"), ("2M", "root")]
    assert list(v) == [(5, *k) for k in order]
    root = v[5, "4K", "root"]
    assert (root["cells"], root["errors"], root["stalls"]) == (4, 2, 1)
    assert root["largest_memory"] == 16 * TIB
    assert root["worst_max_op_ns"] == 800 * MS
    assert root["worst_max_rcu_hold_ns"] == 30 * S
    assert (root["worst_op_at_largest_ns"], root["stall_at_largest"]) == (800 * MS, True)
    assert (root["under_budget_up_to"], root["over_budget_from"]) == (1 * TIB, 4 * TIB)
    assert (root["stall_free_up_to"], root["stalls_from"]) == (4 * TIB, 16 * TIB)

    two = v[5, "4K", "two_pass"]
    assert (two["cells"], two["errors"], two["stalls"]) == (4, 0, 0)
    assert (two["largest_memory"], two["worst_op_at_largest_ns"]) == (16 * TIB, 90 * MS)
    assert (two["under_budget_up_to"], two["over_budget_from"]) == (16 * TIB, None)
    assert (two["stall_free_up_to"], two["stalls_from"]) == (16 * TIB, None)

    up = v[5, "4K", "upstream"]  # 150 ms at 4 TiB: safe only up to 1 TiB
    assert (up["under_budget_up_to"], up["over_budget_from"]) == (1 * TIB, 4 * TIB)
    assert (up["worst_max_op_ns"], up["worst_op_at_largest_ns"]) == (150 * MS, 90 * MS)

    huge = v[5, "2M", "root"]  # even the smallest guest is over budget
    assert (huge["under_budget_up_to"], huge["over_budget_from"]) == (None, 1 * TIB)
    assert (huge["stall_free_up_to"], huge["stalls_from"]) == (1 * TIB, 4 * TIB)


def test_verdicts_budget_is_configurable_and_strict(shapes):
    v = _verdicts(shapes, budget_ms=350)
    assert v[5, "4K", "root"]["under_budget_up_to"] == 4 * TIB  # worst at 4 TiB is 300 ms
    assert v[5, "4K", "root"]["over_budget_from"] == 16 * TIB
    v = _verdicts(shapes, budget_ms=90)  # two_pass reaches exactly 90 ms at 16 TiB
    assert v[5, "4K", "two_pass"]["under_budget_up_to"] == 4 * TIB
    assert v[5, "4K", "two_pass"]["over_budget_from"] == 16 * TIB


def test_price_of_safety(shapes):
    df = summary.price_of_safety(shapes)
    p = {(r["page_size"], r["strategy"]): r for r in df.to_dicts()}
    assert list(p) == [("4K", "two_pass"), ("4K", "upstream")]
    two = p["4K", "two_pass"]  # 1100/1000, 4800/4000, 24000/16000
    assert two["pairs"] == 3
    assert two["median_ratio"] == pytest.approx(1.2)
    assert (two["min_ratio"], two["max_ratio"]) == (pytest.approx(1.1), pytest.approx(1.5))
    assert two["total_ratio"] == pytest.approx(29900 / 21000)
    up = p["4K", "upstream"]  # 2000/1000, 8000/4000, 48000/16000
    assert (up["pairs"], up["median_ratio"], up["max_ratio"]) == (3, 2.0, 3.0)
    assert up["total_ratio"] == pytest.approx(58000 / 21000)


def test_error_rows(shapes, known):
    errs = summary.error_rows(shapes)
    assert errs.height == 2 and summary.error_count(shapes) == 2
    assert errs["guest_memory"].to_list() == [1 * TIB, 64 * TIB]
    assert set(errs["error"].to_list()) == {"RuntimeError: simulated failure"}
    assert summary.error_count(known) == 3
    assert summary.error_rows(known, limit=1).height == 1


def test_aggregates_read_only_the_columns_they_need(tmp_path):
    """A file whose unused columns have the wrong types cannot be read whole,
    but every aggregate (and the whole report) still works: none reads them."""
    write_dataset(known_rows(), tmp_path / "results")
    odd = row(seed=99, max_op_ns=77 * MS)
    odd.update(sim_seconds="slow", leaf_zapped="many", cell_id="odd")
    schema = pa.schema(
        [pa.field(f.name, pa.string()) if f.name in ("sim_seconds", "leaf_zapped") else f
         for f in SCHEMA]
    )  # fmt: skip
    pq.write_to_dataset(
        pa.Table.from_pylist([odd], schema=schema),
        tmp_path / "results",
        partition_cols=["paging_levels", "strategy"],
        basename_template="odd-{i}.parquet",
    )
    with pytest.raises(pl.exceptions.SchemaError):
        summary.scan(tmp_path).collect()
    assert summary.summarize(tmp_path)["worst_max_op_ns"][0] == 77 * MS
    written = report.write_report(tmp_path)
    assert written["report_html"].is_file()


# -- memory layouts ------------------------------------------------------------


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    run = tmp_path_factory.mktemp("layouts")
    write_dataset(layout_rows(), run / "results")
    return run


def test_verdicts_group_by_layout_and_split_when_several_are_present(layouts):
    assert summary.verdict_keys(layouts) == (
        "paging_levels",
        "layout",
        "split_ratio",
        "page_size",
        "strategy",
    )
    v = summary.verdicts(layouts, budget_ms=100)
    got = {
        (r["layout"], r["split_ratio"], r["strategy"]): (
            r["largest_memory"],
            r["worst_op_at_largest_ns"],
            r["under_budget_up_to"],
            r["over_budget_from"],
        )
        for r in v.to_dicts()
    }
    assert got == {
        ("flat", 0.0, "root"): (4 * TIB, 90 * MS, 4 * TIB, None),
        ("flat", 0.0, "two_pass"): (4 * TIB, 2 * MS, 4 * TIB, None),
        ("q35", 0.0, "root"): (4 * TIB, 150 * MS, 1 * TIB, 4 * TIB),
        ("q35", 0.0, "two_pass"): (4 * TIB, 5 * MS, 4 * TIB, None),
        ("q35", 0.2, "root"): (1 * TIB, 200 * MS, None, 1 * TIB),
        ("q35", 0.2, "two_pass"): (1 * TIB, 8 * MS, 1 * TIB, None),
    }
    # Flat first, then q35; split ratios ascending.
    assert v.select("layout", "split_ratio").unique(maintain_order=True).rows() == [
        ("flat", 0.0),
        ("q35", 0.0),
        ("q35", 0.2),
    ]
    # Pairs never cross layouts: q35 two_pass against q35 root only.
    price = {
        (r["layout"], r["split_ratio"], r["strategy"]): r["median_ratio"]
        for r in summary.price_of_safety(layouts).to_dicts()
    }
    assert price[("flat", 0.0, "two_pass")] == pytest.approx(1.1)
    assert price[("q35", 0.0, "two_pass")] == pytest.approx(1.2)
    assert price[("q35", 0.2, "two_pass")] == pytest.approx(2.0)


def test_one_layout_keeps_the_verdicts_as_they_were(tmp_path):
    rows = [r for r in layout_rows() if r["layout"] == "q35" and r["split_ratio"] == 0.0]
    write_dataset(rows, tmp_path / "results")
    assert summary.verdict_keys(tmp_path) == summary.VERDICT_KEYS
    assert summary.verdicts(tmp_path).columns[:3] == list(summary.VERDICT_KEYS)


def test_verdict_lines_name_the_layout(layouts):
    from sweep.report.render import verdict_lines

    lines = verdict_lines(summary.verdicts(layouts, budget_ms=100), 100)
    assert len(lines) == 3
    assert lines[1].startswith(
        "**4-level paging, q35 layout, split ratio 0, 1G pages, 4TiB guest:**"
    )
    assert "over 100 ms with root (150 ms)" in lines[1]
    assert lines[2].startswith("**4-level paging, q35 layout, split ratio 0.2, 1G pages, 1TiB")


# -- kernels ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    from report_data import KERNEL_SCHEMA, kernel_rows

    run = tmp_path_factory.mktemp("kernels")
    write_dataset(kernel_rows(), run / "results", schema=KERNEL_SCHEMA)
    return run


def test_kernel_verdicts_give_the_largest_guest_without_a_stall(kernels):
    assert summary.has_kernels(kernels)
    v = summary.kernel_verdicts(kernels, budget_ms=100)
    got = {
        (r["kernel"], r["trigger"]): (
            r["cells"],
            r["worst_max_op_ns"],
            r["stall_free_up_to"],
            r["stalls_from"],
            r["under_budget_up_to"],
            r["worst_wall_ns"],
        )
        for r in v.to_dicts()
    }
    assert got == {
        ("5.15", "memslot"): (4, 500_000 * MS, 64 * GIB, 1024 * GIB, None, 500_000 * MS),
        ("5.15", "vm_destroy"): (3, 230_000 * MS, 1024 * GIB, 16384 * GIB, None, 230_000 * MS),
        ("6.9", "memslot"): (2, int(0.14 * MS), 16384 * GIB, None, 16384 * GIB, 600_000 * MS),
        ("6.13", "memslot"): (2, int(0.14 * MS), 16384 * GIB, None, 16384 * GIB, 280_000 * MS),
    }
    # By version, not as text: 6.9 before 6.13; the cell without a kernel is left out.
    assert v["kernel"].to_list() == ["5.15", "5.15", "6.9", "6.13"]


def test_kernel_lines_say_where_each_kernel_stalls(kernels):
    from sweep.report.render import kernel_lines

    lines = kernel_lines(summary.kernel_verdicts(kernels, budget_ms=100), 100)
    assert lines[0] == (
        "**On 5.15, memslot deletion:** worst operation 500 s (over 100 ms from the smallest "
        "guest tested, 64GiB), worst RCU hold 500 s; RCU stalls from 1TiB: no stall up to 64GiB."
    )
    assert lines[2] == (
        "**On 6.9, memslot deletion:** worst operation 140 µs (under 100 ms at every size "
        "tested), worst RCU hold 1 ms; no RCU stall up to 16TiB, the largest tested."
    )


def test_verdicts_and_summaries_group_by_kernel(kernels):
    keys = summary.verdict_keys(kernels)
    assert keys[:2] == ("kernel", "trigger")
    by_kernel = summary.summarize(kernels, ["kernel"])
    assert by_kernel["kernel"].to_list() == ["5.15", "6.9", "6.13", None]
    assert by_kernel["cells"].to_list() == [7, 2, 2, 1]


def test_a_dataset_without_kernels_has_no_kernel_verdicts(layouts):
    assert not summary.has_kernels(layouts)
