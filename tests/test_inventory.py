"""A fleet inventory as input: its rows times the grid's other axes, the VM
names carried to the rows and the report, every bad row named by row and
column before Ray starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_module

from sweep.dataset import open_dataset
from sweep.run.cli import command_line, sweep
from sweep.run.inventory import Inventory
from sweep.run.validate import InventoryError

ZAPSWEEP = str(Path(sys.executable).with_name("zapsweep"))
STRATEGIES = "grid.zap_levels=[root,two_pass,per_level,upstream]"
FLEET = """\
# five VMs of a fleet
name,kernel,paging_levels,layout,guest_memory,page_size,vcpus,dirty_ratio
web-1,,5,flat,16MiB,4K,4,0.5
web-2,6.6,5,flat,64MiB,4K,8,0
db-1,6.13,5,flat,1GiB,2M,16,1
db-2,,5,q35,3GiB,2M,32,0.25
cache,,5,flat,256MiB,4K,2,0.5
"""


def cfg(*overrides: str):
    args = command_line(["grid=smoke", "report=false", "progress.bar=false", *overrides])
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=args)


def inventory(tmp_path: Path, text: str, name: str = "vms.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_five_vms_times_four_strategies_are_20_named_rows_and_a_report_section_each(
    ray_local, tmp_path
):
    vms = inventory(tmp_path, FLEET)
    run_dir = tmp_path / "run"
    manifest = sweep(cfg(f"inventory={vms}", STRATEGIES), run_dir)
    rows = pl.from_arrow(open_dataset(run_dir / "results").to_table())
    assert manifest["counts"]["ok"] == rows.height == 20
    assert manifest["inventory"] == {
        "path": str(vms),
        "rows": 5,
        "columns": [
            "name",
            "kernel",
            "paging_levels",
            "layout",
            "guest_memory",
            "page_size",
            "vcpus",
            "dirty_ratio",
        ],
    }
    got = rows.group_by("name").agg(
        pl.col("strategy").sort(), pl.col("guest_memory").first(), pl.col("vcpus").first()
    )
    assert dict(zip(got["name"], got["strategy"].to_list(), strict=True)) == {
        vm: ["per_level", "root", "two_pass", "upstream"]
        for vm in ("web-1", "web-2", "db-1", "db-2", "cache")
    }
    db2 = got.filter(pl.col("name") == "db-2").row(0, named=True)
    assert (db2["guest_memory"], db2["vcpus"]) == (3 << 30, 32)
    assert set(rows.filter(pl.col("name") == "db-2")["layout"]) == {"q35"}  # any Scenario column
    kernels = dict(rows.select("name", "kernel").unique().iter_rows())
    assert kernels == {"web-1": None, "web-2": "6.6", "db-1": "6.13", "db-2": None, "cache": None}
    assert rows["cell_id"].n_unique() == 20

    from sweep.report import write_report

    written = write_report(run_dir)
    report = written["report_md"].read_text()
    assert "## VMs (5)" in report
    for vm in ("web-1", "web-2", "db-1", "db-2", "cache"):
        section = report.split(f"### VM {vm}\n", 1)[1].split("\n### ", 1)[0]
        assert "guest_memory=" in section and "vcpus=" in section
        for strategy in ("root", "two_pass", "per_level", "upstream"):
            assert f"| {strategy} |" in section
    vm_table = pl.read_parquet(written["vms"])
    assert vm_table.height == 20 and set(vm_table["name"]) == set(got["name"])
    worst = rows.group_by("name").agg(pl.col("max_op_ns").max()).sort("max_op_ns")
    first = report.index("### VM ")
    assert report.index(f"### VM {worst['name'][-1]}") == first  # the riskiest VM first
    html = written["report_html"].read_text()
    assert "<h3>VM cache</h3>" in html


def test_the_same_inventory_in_parquet_reads_the_same_rows(tmp_path):
    csv = Inventory.read(inventory(tmp_path, FLEET))
    table = pa.table(
        {
            "name": [r[0] for r in csv.rows],
            "kernel": [r[1] for r in csv.rows],
            "paging_levels": pa.array([r[2] for r in csv.rows], pa.int32()),
            "layout": [r[3] for r in csv.rows],
            "guest_memory": [r[4] for r in csv.rows],
            "page_size": [r[5] for r in csv.rows],
            "vcpus": [r[6] for r in csv.rows],
            "dirty_ratio": [r[7] for r in csv.rows],
        }
    )
    pq.write_table(table, tmp_path / "vms.parquet")
    parquet = Inventory.read(tmp_path / "vms.parquet")
    assert parquet.columns == csv.columns and parquet.rows == csv.rows
    assert parquet.labels[0] == "vms.parquet row 1" and csv.labels[0] == "vms.csv row 1 (line 3)"


def test_the_shipped_inventory_is_found_by_name():
    fleet = Inventory.read("fleet")
    assert fleet.path.parent.name == "inventory" and len(fleet.rows) == 6
    assert "name" in fleet.columns


HEADER = "name,paging_levels,guest_memory,page_size,vcpus,dirty_ratio,zap_levels\n"
GOOD = "ok-1,4,16MiB,4K,4,0.5,root\n"


@pytest.mark.parametrize(
    ("text", "where", "column", "allowed"),
    [
        (HEADER.replace("vcpus", "vcpu") + GOOD, "vms.csv header", "vcpu", "the columns"),
        (HEADER.replace("vcpus", "page_size") + GOOD, "vms.csv header", "page_size", "once"),
        (HEADER + GOOD + "bad,4,16MiB,4K,four,0.5,root\n", "row 2 (line 3)", "vcpus", "integer"),
        (HEADER + GOOD + "bad,4,16MiB,3M,4,0.5,root\n", "row 2 (line 3)", "page_size", "one of"),
        (HEADER + GOOD + "bad,4,12TB,4K,4,0.5,root\n", "row 2 (line 3)", "guest_memory", "KiB"),
        (HEADER + GOOD + "bad,4,16MiB,4K,0,0.5,root\n", "row 2 (line 3)", "vcpus", ">= 1"),
        (HEADER + GOOD + "bad,4,16MiB,4K,4,1.5,root\n", "row 2 (line 3)", "dirty_ratio", "[0, 1]"),
        (HEADER + GOOD + "bad,4,16MiB,4K,,0.5,root\n", "row 2 (line 3)", "vcpus", "integer"),
        (HEADER + GOOD + "bad,4,16MiB,4K,4\n", "row 2 (line 3)", "dirty_ratio", "a value in"),
        (HEADER + GOOD + "bad,4,16MiB,4K,4,0.5,root,x\n", "row 2 (line 3)", "#8", "the columns"),
        (HEADER + GOOD + "ok-1,4,64MiB,4K,4,0.5,root\n", "row 2 (line 3)", "name", "row 1 (line"),
        (HEADER + GOOD + ",4,64MiB,4K,4,0.5,root\n", "row 2 (line 3)", "name", "a name for every"),
        # valid alone, but no cell of the grid takes it: a 512G pass needs 5-level paging
        (HEADER + GOOD + "bad,4,16MiB,4K,4,0.5,\"512G,root\"\n", "row 2 (line 3)", "zap_levels",
         "below the root"),
        ("name,layout,guest_memory\nvm,q36,16GiB\n", "row 1 (line 2)", "layout", "one of"),
        ("name,kernel,guest_memory\nvm,4.19,16GiB\n", "row 1 (line 2)", "kernel", "6.14"),
        ("# comments and blank lines count as lines\n\n" + HEADER + GOOD + GOOD.replace("ok-1", "x")
         .replace("16MiB", "16MB"), "row 2 (line 5)", "guest_memory", "KiB"),
    ],
)  # fmt: skip
def test_every_bad_row_is_named_by_row_and_column(tmp_path, text, where, column, allowed):
    path = inventory(tmp_path, text)
    with pytest.raises(InventoryError) as err:
        sweep(cfg(f"inventory={path}"), tmp_path / "run")
    message = str(err.value)
    assert message.startswith("inventory vms.csv") and where in message, message
    assert f"column {column!r}" in message or f"column '{column}" in message, message
    assert allowed in message, message
    assert not (tmp_path / "run" / "results").exists()  # refused before anything was written


def test_an_inventory_that_is_not_there_names_the_shipped_ones(tmp_path):
    with pytest.raises(InventoryError, match=r"vms\.csv.*shipped inventories \['fleet'\]"):
        sweep(cfg("inventory=vms.csv"), tmp_path / "run")


def test_a_zip_of_a_column_the_inventory_sets_is_refused(tmp_path):
    from sweep.run.grid import GridError

    vms = inventory(tmp_path, FLEET)
    with pytest.raises(GridError, match="'vcpus' is set by the inventory"):
        sweep(cfg(f"inventory={vms}", "grid.vcpus=[1,2]", "grid.seed=[0,1]",
                  "grid.zip=[[vcpus,seed]]"), tmp_path / "run")  # fmt: skip


def test_the_command_line_refuses_a_bad_row_in_one_line_before_ray(tmp_path):
    path = inventory(tmp_path, HEADER + GOOD + "bad,4,16MiB,4K,four,0.5,root\n")
    proc = subprocess.run(
        [ZAPSWEEP, f"inventory={path}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    said = proc.stdout + proc.stderr  # Hydra's job log goes to stdout
    (line,) = [x for x in said.splitlines() if "inventory" in x]
    assert "row 2 (line 3), column 'vcpus': 'four' is invalid: allowed an integer" in line
    assert "Ray" not in said and not (tmp_path / "run" / "results").exists()


def test_vms_swept_over_kernels_get_a_verdict_per_kernel_and_strategy(ray_local, tmp_path):
    vms = inventory(tmp_path, "name,guest_memory\nsmall,16MiB\nlarge,64MiB\n")
    run_dir = tmp_path / "run"
    sweep(cfg(f"inventory={vms}", "grid.zap_levels=[root,two_pass]", "grid.paging_levels=[4]",
              "grid.kernel=['6.6','6.13']", "grid.dirty_ratio=[0.5]"), run_dir)  # fmt: skip
    from sweep.report import write_report

    report = write_report(run_dir)["report_md"].read_text()
    vms = report.split("## VMs (2)", 1)[1]
    header = next(line for line in vms.splitlines() if line.startswith("| name |"))
    assert [c.strip() for c in header.split("|")[2:-1]] == [
        "6.6 / root", "6.6 / two_pass", "6.13 / root", "6.13 / two_pass"
    ]  # fmt: skip
    section = report.split("### VM small\n", 1)[1].split("\n### ", 1)[0]
    assert "| kernel | strategy |" in section and "| 6.13 | two_pass |" in section
