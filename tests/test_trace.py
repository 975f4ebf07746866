"""zapsweep-trace: a Chrome trace-event JSON file of one zap that parses, keeps
to the trace-event format, nests each operation in its RCU hold, and agrees
with the ZapResult; a 16 TiB ``tick`` zap stays under 20 MB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import Scenario, simulate
from sweep.trace import main

TRACE = str(Path(sys.executable).with_name("zapsweep-trace"))
MB = 1_000_000


def load(path: Path) -> tuple[list[dict], dict]:
    data = json.loads(path.read_text())
    assert set(data) == {"traceEvents", "displayTimeUnit", "otherData"}
    return data["traceEvents"], data["otherData"]["zapsweep"]


def ns(us: float) -> int:
    return round(us * 1000)


def check_format(events: list[dict]) -> None:
    """What Perfetto's and chrome://tracing's JSON importers read: complete
    slices (X) with ts and dur, instants (i) with a scope, metadata (M)."""
    for e in events:
        assert e["ph"] in ("X", "i", "M") and isinstance(e["name"], str) and e["pid"] == 1
        if e["ph"] == "X":
            assert e["ts"] >= 0 and e["dur"] >= 0 and isinstance(e["args"], dict)
        if e["ph"] == "i":
            assert e["s"] == "t" and e["ts"] >= 0
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name", "thread_sort_index")


def by_cat(events: list[dict], *cats: str) -> list[dict]:
    return [e for e in events if e.get("cat") in cats]


def check_agrees(events: list[dict], meta: dict, scenario: Scenario) -> None:
    """The trace's events against the result of a separate simulate()."""
    r = simulate(scenario)
    assert meta["result"] == r.to_dict()
    holds = by_cat(events, "rcu")
    aggregated = by_cat(events, "rcu.aggregated", "rcu.summarized")
    assert len(holds) + sum(e["args"]["holds"] for e in aggregated) == r.yields + 1
    longest = max([e["args"]["duration_ns"] for e in holds] +
                  [e["args"]["longest_ns"] for e in aggregated])  # fmt: skip
    assert longest == r.max_rcu_hold_ns
    ops = by_cat(events, "operation")
    assert max(e["args"]["duration_ns"] for e in ops) == r.max_op_ns
    (zap,) = by_cat(events, "zap")
    assert ns(zap["dur"]) == r.total_ns and zap["args"]["yields"] == r.yields
    passes = by_cat(events, "pass")
    assert [p["args"]["zap_level"] for p in passes] == list(scenario.zap_level_numbers)
    assert sum(p["args"]["yields"] for p in passes) == r.yields
    assert sum(p["args"]["visits"] for p in passes) == r.visits
    # One timeline: holds in order, not overlapping; each operation inside one.
    spans = sorted((ns(e["ts"]), ns(e["ts"] + e["dur"])) for e in holds + aggregated)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    listed = [(ns(e["ts"]), ns(e["ts"] + e["dur"])) for e in holds]
    for op in ops:
        start, end = ns(op["ts"]), ns(op["ts"] + op["dur"])
        assert any(a <= start and end <= b for a, b in listed), op
    yields = [e for e in events if e["name"] == "yield"]
    assert (
        len(yields)
        + sum(e["args"].get("yields", 0) for e in by_cat(events, "rcu.aggregated"))
        + (sum(e["args"]["holds"] for e in by_cat(events, "rcu.summarized")))
        >= r.yields
    )


@pytest.mark.parametrize(
    ("args", "scenario"),
    [
        (
            ["guest_memory=64GiB", "zap_levels=two_pass", "resched=always"],
            Scenario(guest_memory="64GiB", zap_levels="two_pass", resched="always"),
        ),
        (
            ["guest_memory=1GiB", "zap_levels=2M,root", "resched=tick", "flush_on_yield=true",
             "resched_interval_us=50", "vcpus=64"],
            Scenario(guest_memory="1GiB", zap_levels="2M,root", resched="tick",
                     flush_on_yield=True, resched_interval_us=50, vcpus=64),
        ),
        (
            ["guest_memory=256MiB", "kernel=6.6", "trigger=vm_destroy"],
            Scenario(guest_memory="256MiB", kernel="6.6", trigger="vm_destroy"),
        ),
        (
            ["paging_levels=5", "guest_memory=4GiB", "page_size=2M", "zap_levels=[2M,root]",
             "resched=never", "engine=reference"],
            Scenario(paging_levels=5, guest_memory="4GiB", page_size="2M",
                     zap_levels="2M,root", resched="never"),
        ),
    ],
)  # fmt: skip
def test_a_trace_parses_and_agrees_with_the_result(tmp_path, capsys, args, scenario):
    out = tmp_path / "zap.json"
    assert main([*args, "--out", str(out)]) == 0
    events, meta = load(out)
    check_format(events)
    check_agrees(events, meta, scenario)
    assert "wrote" in capsys.readouterr().out


def test_holds_past_the_limit_are_aggregated_and_counted(tmp_path):
    out = tmp_path / "zap.json"
    args = ["guest_memory=1GiB", "zap_levels=per_level", "resched=tick", "resched_interval_us=20"]
    assert main([*args, "--out", str(out), "--holds", "50", "--operations", "20"]) == 0
    events, meta = load(out)
    check_format(events)
    scenario = Scenario(guest_memory="1GiB", zap_levels="per_level", resched_interval_us=20)
    check_agrees(events, meta, scenario)
    r = simulate(scenario)
    assert r.yields > 500
    assert meta["holds"]["total"] == r.yields + 1
    assert meta["holds"]["listed"] + meta["holds"]["aggregated"] == r.yields + 1
    assert 50 <= meta["holds"]["listed"] <= 70  # the 50 longest, and the operations' own
    assert meta["dropped"]["aggregated_slices"] == len(by_cat(events, "rcu.aggregated"))
    assert len(by_cat(events, "operation")) == 20


def write_run(run_dir: Path, cost_model: str = "seed-2022") -> list[dict]:
    """A run directory as a sweep leaves it: a few cells' rows in results/ and
    the resolved config (its cost model) in .hydra/."""
    import yaml

    from engine import load_cost_model
    from engine.cost_model import cost_model_dir
    from sweep.dataset import ResultWriter, RunDir
    from sweep.dataset.schema import rows_table
    from sweep.run.cells import RunSettings, make_cell, run_batch

    model = load_cost_model(cost_model)
    settings = RunSettings(engine="fast", cost_model=model)
    scenarios = [Scenario(guest_memory="64MiB", zap_levels=z) for z in ("root", "per_level")]
    rows = run_batch([make_cell(s, settings, name="vm-1") for s in scenarios], settings, "w")
    run = RunDir.at(run_dir)
    writer = ResultWriter(run, {"zapsweep.engine": "fast"})
    writer.write(rows_table(rows))
    writer.close()
    run.hydra_config.parent.mkdir(parents=True)
    costs = yaml.safe_load((cost_model_dir() / f"{cost_model}.yaml").read_text())
    run.hydra_config.write_text(yaml.safe_dump({"cost_model": costs}))
    return rows


def test_a_cell_of_a_run_is_traced_as_it_ran(tmp_path, capsys):
    """--cell: the row's scenario, engine and the run's costs; the same result."""
    run_dir = tmp_path / "run"
    row = write_run(run_dir)[1]
    out = tmp_path / "cell.json"
    assert main(["--cell", row["cell_id"][:6], str(run_dir), "--out", str(out)]) == 0
    assert "the same result as the run's row" in capsys.readouterr().out
    _, meta = load(out)
    assert {k: meta["result"][k] for k in ("total_ns", "max_op_ns", "yields")} == {
        k: row[k] for k in ("total_ns", "max_op_ns", "yields")
    }
    # The cell changed by a key: traced, and no longer compared with the row.
    assert main(["--cell", row["cell_id"], str(run_dir), "resched=always", "--out", str(out)]) == 0
    assert "the same result" not in capsys.readouterr().out
    assert load(out)[1]["scenario"]["resched"] == "always"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["vcpu=4"], "'vcpu=4': expected KEY=VALUE with KEY one of"),
        (["guest_memory=12TB"], "guest_memory='12TB' is invalid"),
        (["vcpus=1,2"], "one value per key"),
        (["resched=sometimes"], "resched='sometimes' is invalid: allowed one of"),
        (["engine=warp"], "engine='warp' is invalid"),
        (["kernel=4.19"], "kernel='4.19' is invalid: allowed one of"),
        (["smm_populated_ratio=0.5"], "smm_populated_ratio=0.5 is invalid: allowed 0 in a trace"),
        (["--cell", "ffffffffffffffff", "nowhere"], "no run directory or results dataset"),
    ],
)
def test_a_bad_argument_is_named(tmp_path, capsys, monkeypatch, args, named):
    monkeypatch.chdir(tmp_path)
    assert main([*args, "--out", str(tmp_path / "x.json")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_a_16_tib_tick_trace_stays_under_20_mb(tmp_path):
    out = tmp_path / "big.json"
    args = ["paging_levels=5", "guest_memory=16TiB", "zap_levels=per_level", "resched=tick",
            "flush_on_yield=true", "vcpus=416"]  # fmt: skip
    proc = subprocess.run([TRACE, *args, "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size < 20 * MB
    events, meta = load(out)
    check_format(events)
    scenario = Scenario(paging_levels=5, guest_memory="16TiB", zap_levels="per_level",
                        flush_on_yield=True, vcpus=416)  # fmt: skip
    check_agrees(events, meta, scenario)
    assert meta["holds"]["total"] > 300_000 and meta["dropped"]["holds"] > 300_000
