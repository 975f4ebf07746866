"""Every user error of the four console scripts, each run as the user runs it
(a subprocess of the installed script): one line naming the key, path or value
and what is allowed, exit code 2, no traceback; a refused ``zapsweep`` leaves no
run directory behind (nor the parents it would have made).

The cases run two at a time (the machine's cores); each is a fresh process
(about 45 s of CPU in all: marked slow).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from report_data import row, write_dataset

from sweep.dataset import RunDir
from sweep.run.lock import run_dir_lock

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYDRA_FULL_ERROR")}


@dataclass
class Case:
    id: str
    argv: list[str]
    expect: tuple[str, ...]  # pieces of the one message line
    run_dir: Path | None = None  # zapsweep: must not exist afterwards (if it did not before)
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _message_lines(out: str, err: str) -> list[str]:
    """What the user is told: stderr, and the warning/error lines of the log on stdout."""
    lines = [x for x in err.splitlines() if x.strip()]
    return lines + [x for x in out.splitlines() if "][ERROR]" in x or "][WARNING]" in x]


def _run(case: Case) -> dict:
    start = time.monotonic()
    proc = subprocess.run(
        case.argv,
        capture_output=True,
        text=True,
        env={**ENV, **case.env},
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    return {
        "code": proc.returncode,
        "out": proc.stdout,
        "err": proc.stderr,
        "seconds": time.monotonic() - start,
        "left": case.run_dir is not None and case.run_dir.parent.exists(),
    }


def zapsweep_cases(tmp: Path) -> list[Case]:
    def z(id: str, args: list[str], *expect: str, **kw) -> Case:
        run_dir = tmp / "z" / id / "run"
        argv = [str(BIN / "zapsweep"), "grid=smoke", "report=false", *args]
        if not any(a.startswith("hydra.run.dir=") for a in args):
            argv.append(f"hydra.run.dir={run_dir}")
        return Case(f"zapsweep-{id}", argv, expect, run_dir, **kw)

    closed = _free_port()
    return [
        z("unknown-key", ["grid.vcpu=[1]"], "grid.vcpu", "'vcpus'"),
        z("wrong-type", ["grid.flush_on_yield=[maybe]"], "grid.flush_on_yield=[maybe]",
          "allowed a list of true/false values"),
        z("wrong-type-setting", ["batch.size=many"], "batch.size=many", "an integer or null"),
        z("no-such-grid", ["grid=smok"], "grid=smok",
          "bench, fleet, full, kernels, seed, smoke, vms"),
        z("schema-is-no-grid", ["grid=grid_schema"], "grid=grid_schema",
          "bench, fleet, full, kernels, seed, smoke, vms"),
        z("schema-is-no-ray", ["ray=ray_schema"], "ray=ray_schema", "cluster, local"),
        z("no-such-cost-model", ["cost_model=nope"], "cost_model=nope", "seed-2022"),
        z("does-not-parse", ["grid.vcpus=[1,"], "'grid.vcpus=[1,'", "key=value"),
        z("bad-grid-value", ["grid.vcpus=[-1]"], "grid.vcpus", "integer >= 1"),
        z("size-shown-with-unit", ["grid.guest_memory=[1PiB]", "grid.paging_levels=[4]"],
          "grid.guest_memory='1PiB'", "at most 2^host_phys_bits = 64TiB"),
        z("zap-levels-name-512g", ["grid.zap_levels=[3G]"], "grid.zap_levels='3G'",
          "['4K', '2M', '1G'] (and ['512G'] with 5-level paging)"),
        z("zip-unequal", ["grid=seed", "grid.zip=[[guest_memory,vcpus]]"], "grid.zip[0]",
          "equal lengths", "'guest_memory': 3, 'vcpus': 2"),
        z("zip-unknown-axis", ["grid.zip=[[guest_memory,vcpu]]"], "grid.zip[0]",
          "'vcpu' is not an axis", "allowed ['paging_levels', 'guest_memory'"),
        z("exclude-unknown-field", ["grid.exclude=[{paging_level:4}]"], "grid.exclude[0]",
          "'paging_level' is not a Scenario field", "allowed ['paging_levels'"),
        z("timeout-zero", ["ray.connect_timeout_s=0"], "ray.connect_timeout_s", "> 0"),
        z("run-dir-cannot-be-made", ["hydra.run.dir=/proc/nope/run"],
          "hydra.run.dir=/proc/nope/run", "writable directory"),
        z("results-dir-unwritable", ["results_dir=/proc/nope"],
          "cannot write results under /proc/nope: No such file or directory; allowed a "
          "writable directory", "nothing was run"),
        z("cluster-refuses", [f"ray.address=127.0.0.1:{closed}", "ray.connect_timeout_s=1"],
          f"ray.address=127.0.0.1:{closed}", "Connection refused within 1 s",
          "ray.connect_timeout_s"),
        z("cluster-from-environment", ["ray.connect_timeout_s=1"],
          f"RAY_ADDRESS=127.0.0.1:{closed}", "within 1 s",
          env={"RAY_ADDRESS": f"127.0.0.1:{closed}"}),
        # kernel presets, triggers, roots, contention; the settings beside them
        z("kernel-unknown", ['grid.kernel=["5.99"]'], "grid.kernel", "'5.15'", "'6.14'"),
        z("kernel-is-no-group", ["kernel=6.6"], "unknown key 'kernel'", "'grid'"),
        z("trigger-unknown", ["grid.trigger=[reboot]"], "grid.trigger", "'vm_destroy'"),
        z("preempt-unknown", ["grid.preempt=[sometimes]"], "grid.preempt", "'voluntary'"),
        z("contention-negative", ["grid.lock_contention_us=[-5]"], "grid.lock_contention_us",
          "null"),
        z("smm-above-one", ["grid.smm_populated_ratio=[2]"], "grid.smm_populated_ratio",
          "[0, 1]"),
        z("root-zap-unknown", ["grid.root_zap=[sideways]"], "grid.root_zap", "'parallel'"),
        z("ad-writeback-not-a-flag", ["grid.ad_writeback=[maybe]"],
          "grid.ad_writeback=[maybe]", "true/false"),
        z("zap-levels-kernel-without-one", ["grid.zap_levels=[kernel]"], "zap_levels",
          "kernel preset"),
        z("max-failures-zero", ["max_failures=0"], "max_failures", ">= 1"),
        z("retry-unknown", ["retry=everything"], "retry", "'errors'"),
        z("inventory-missing", [f"inventory={tmp / 'vms.csv'}"], "vms.csv", "fleet"),
    ]  # fmt: skip


def report_cases(tmp: Path) -> list[Case]:
    run = tmp / "r" / "run"
    write_dataset([row(strategy="root"), row(strategy="two_pass")], run / "results")
    (run / "manifest.json").write_text(json.dumps({"status": "complete", "results_dir": "results"}))
    (tmp / "r" / "empty").mkdir()
    foreign = tmp / "r" / "foreign" / "results"
    foreign.mkdir(parents=True)
    (foreign / "part-0.parquet").write_bytes(b"PAR1 not really PAR1")

    def r(id: str, args: list[str], *expect: str) -> Case:
        return Case(f"report-{id}", [str(BIN / "zapsweep-report"), *args], expect)

    return [
        r("no-arguments", [], "give a run directory, or --compare A B"),
        r("missing", [str(tmp / "r" / "missing")], "no run directory or results dataset at"),
        r("a-manifest-file", [str(run / "manifest.json")], "manifest.json is not a run",
          "allowed a run directory"),
        r("a-directory-of-runs", [str(tmp / "r")], f"{tmp / 'r'} is not a run but a "
          f"directory of 1 run ({run}): give one of them"),
        r("empty-dir", [str(tmp / "r" / "empty")], "no Parquet files under"),
        r("only-a-bad-file", [str(foreign.parent)], "passed the integrity check", "1 skipped"),
        r("group-by-then-missing-run", ["--group-by", "strategy", str(tmp / "r" / "gone")],
          "no run directory or results dataset at", "gone"),
        r("unknown-column", [str(run), "--group-by", "strategy", "bogus"],
          "unknown group keys ['bogus']", "allowed columns", "guest_memory"),
        r("negative-budget", [str(run), "--budget-ms", "-1"], "--budget-ms", "finite number > 0"),
        r("budget-not-a-number", [str(run), "--budget-ms", "soon"], "--budget-ms", "'soon'"),
        r("out-unwritable", [str(run), "--out", "/proc/nope"], "/proc/nope", "writable"),
        r("output-without-compare", [str(run), "--output", "x.md"], "--output goes with --compare"),
        r("compare-one-side", ["--compare", str(run)], "--compare", "expected 2 arguments"),
        r("compare-missing-side", ["--compare", str(run), str(tmp / "r" / "missing")],
          "no run directory or results dataset at"),
        r("unknown-option", [str(run), "--budjet-ms", "5"], "unrecognized arguments: --budjet-ms"),
    ]  # fmt: skip


def calibrate_cases(tmp: Path) -> list[Case]:
    d = tmp / "c"
    d.mkdir()
    (d / "bad.csv").write_text("a,b\n1,2\n")
    (d / "notparquet.parquet").write_text("x")
    (d / "models").mkdir()
    (d / "models" / "taken.yaml").write_text("name: taken\n")

    def c(id: str, args: list[str], *expect: str) -> Case:
        return Case(f"calibrate-{id}", [str(BIN / "zapsweep-calibrate"), *args], expect)

    bad = str(d / "bad.csv")
    return [
        c("no-arguments", [], "the following arguments are required: measurements"),
        c("missing", [str(d / "missing.csv")], "missing.csv: no such file"),
        c("no-measured-column", [bad, "--out", str(d)], "missing column", "'total_ns'"),
        c("not-parquet", [str(d / "notparquet.parquet"), "--out", str(d)], "cannot read it"),
        c("bad-name", [bad, "--name", "../x"], "--name '../x'", "letters, digits"),
        c("bad-base", [bad, "--base", "nope", "--out", str(d)], "--base", "seed-2022"),
        c("bad-engine", [bad, "--engine", "slow"], "--engine", "'fast', 'reference'"),
        c("bad-max-rel-se", [bad, "--max-rel-se", "-1"], "--max-rel-se", "finite number > 0"),
        c("exists", [bad, "--name", "taken", "--out", str(d / "models")], "taken.yaml exists",
          "--force"),
    ]  # fmt: skip


def trace_cases(tmp: Path) -> list[Case]:
    run = tmp / "t" / "run"
    write_dataset([row(strategy="root")], run / "results")
    (run / "manifest.json").write_text(json.dumps({"status": "complete", "results_dir": "results"}))

    def t(id: str, args: list[str], *expect: str) -> Case:
        out = [] if "--out" in args else ["--out", str(tmp / "t" / f"{id}.json")]
        return Case(f"trace-{id}", [str(BIN / "zapsweep-trace"), *args, *out], expect)

    return [
        t("unknown-key", ["vcpu=4"], "'vcpu=4'", "KEY one of ['paging_levels'"),
        t("not-key-value", ["64GiB"], "'64GiB'", "expected KEY=VALUE"),
        t("does-not-parse", ["guest_memory=[1,"], "'guest_memory=[1,'"),
        t("bad-value", ["guest_memory=1ZiB"], "guest_memory", "1ZiB"),
        t("two-values", ["paging_levels=4,5"], "'paging_levels=4,5'", "one value per key"),
        t("kernel-unknown", ["kernel=5.99"], "kernel", "'5.15'"),
        t("trigger-unknown", ["kernel=6.6", "trigger=reboot"], "trigger", "'vm_destroy'"),
        t("engine-unknown", ["engine=slow"], "engine", "'fast', 'reference'"),
        t("cost-model-unknown", ["cost_model=nope"], "cost_model", "seed-2022"),
        t("cost-model-retired", ["cost_model=upstream-6.13"], "upstream-6.13",
          "ad_writeback=false"),
        t("smm-root", ["smm_populated_ratio=0.5"], "smm_populated_ratio", "0 in a trace"),
        t("holds-zero", ["--holds", "0"], "--holds", "integer >= 1"),
        t("operations-not-a-number", ["--operations", "many"], "--operations", "'many'"),
        t("cell-one-argument", ["--cell", "ab"], "--cell", "expected 2 arguments"),
        t("cell-missing-run", ["--cell", "ab", str(tmp / "t" / "gone")],
          "no run directory or results dataset at", "gone"),
        t("cell-not-a-run", ["--cell", "ab", str(run / "manifest.json")],
          "manifest.json is not a run", "allowed a run directory"),
        t("cell-not-there", ["--cell", "ffff", str(run)], "no cell 'ffff'",
          "allowed a cell_id of its rows"),
        t("out-no-directory", ["--out", "/proc/nope/x.json"], "--out /proc/nope/x.json",
          "writable directory"),
        t("out-a-directory", ["--out", str(tmp)], "is a directory", "allowed a file path"),
        t("unknown-option", ["--budget", "5"], "unrecognized arguments: --budget"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("errors")
    cases = zapsweep_cases(tmp) + report_cases(tmp) + calibrate_cases(tmp) + trace_cases(tmp)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip([c.id for c in cases], pool.map(_run, cases), strict=True))
    return {c.id: (c, results[c.id]) for c in cases}


ALL_IDS = [
    *(f"zapsweep-{x}" for x in (
        "unknown-key", "wrong-type", "wrong-type-setting", "no-such-grid", "schema-is-no-grid",
        "schema-is-no-ray", "no-such-cost-model", "does-not-parse", "bad-grid-value",
        "size-shown-with-unit", "zap-levels-name-512g", "zip-unequal", "zip-unknown-axis",
        "exclude-unknown-field", "timeout-zero",
        "run-dir-cannot-be-made", "results-dir-unwritable", "cluster-refuses",
        "cluster-from-environment", "kernel-unknown", "kernel-is-no-group", "trigger-unknown",
        "preempt-unknown", "contention-negative", "smm-above-one", "root-zap-unknown",
        "ad-writeback-not-a-flag", "zap-levels-kernel-without-one", "max-failures-zero",
        "retry-unknown", "inventory-missing")),
    *(f"report-{x}" for x in (
        "no-arguments", "missing", "a-manifest-file", "a-directory-of-runs", "empty-dir",
        "only-a-bad-file", "group-by-then-missing-run", "unknown-column", "negative-budget",
        "budget-not-a-number", "out-unwritable",
        "output-without-compare", "compare-one-side", "compare-missing-side", "unknown-option")),
    *(f"calibrate-{x}" for x in (
        "no-arguments", "missing", "no-measured-column", "not-parquet", "bad-name", "bad-base",
        "bad-engine", "bad-max-rel-se", "exists")),
    *(f"trace-{x}" for x in (
        "unknown-key", "not-key-value", "does-not-parse", "bad-value", "two-values",
        "kernel-unknown", "trigger-unknown", "engine-unknown", "cost-model-unknown",
        "cost-model-retired", "smm-root", "holds-zero", "operations-not-a-number",
        "cell-one-argument", "cell-missing-run", "cell-not-a-run", "cell-not-there",
        "out-no-directory", "out-a-directory", "unknown-option")),
]  # fmt: skip


def test_every_case_is_listed(outcomes):
    assert sorted(outcomes) == sorted(ALL_IDS)


@pytest.mark.parametrize("case_id", ALL_IDS)
def test_user_error_is_one_line_exit_2_no_traceback(outcomes, case_id):
    case, out = outcomes[case_id]
    text = out["out"] + out["err"]
    assert out["code"] == case.code, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    lines = _message_lines(out["out"], out["err"])
    assert len(lines) == 1, lines
    for piece in case.expect:
        assert piece in lines[0], lines[0]
    assert not out["left"], f"{case.run_dir} was left behind"


def test_a_directory_of_runs_gets_no_report(outcomes):
    """``zapsweep-report outputs``: neither a report of every run mixed, nor one
    written into the directory above."""
    case, _ = outcomes["report-a-directory-of-runs"]
    runs = Path(case.argv[-1])
    assert not list(runs.parent.glob("report.*")) and not list(runs.glob("report.*"))
    assert not (runs.parent / "summary.parquet").exists()


def test_a_cluster_that_does_not_answer_is_given_up_in_the_time_set(outcomes):
    """1 s set: the driver's start (imports, composition) plus the 1 s, not Ray's retries."""
    _, out = outcomes["zapsweep-cluster-refuses"]
    assert out["seconds"] < 30, out["seconds"]


@pytest.mark.timeout(120)
def test_a_port_that_accepts_but_never_answers_is_given_up(tmp_path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections wait in the backlog; nothing ever answers
        port = silent.getsockname()[1]
        case = Case(
            "silent",
            [str(BIN / "zapsweep"), "grid=smoke", f"ray.address=127.0.0.1:{port}",
             "ray.connect_timeout_s=1", f"hydra.run.dir={tmp_path / 'x' / 'run'}"],
            (f"ray.address=127.0.0.1:{port}", "does not answer within 1 s"),
            tmp_path / "x" / "run",
        )  # fmt: skip
        out = _run(case)
    lines = _message_lines(out["out"], out["err"])
    assert out["code"] == 2 and len(lines) == 1, out
    assert all(p in lines[0] for p in case.expect), lines[0]
    assert "Traceback" not in out["out"] + out["err"] and not out["left"]


@pytest.mark.timeout(120)
def test_a_busy_run_directory_is_named_and_left_as_it_was(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "keep").write_text("x")
    with run_dir_lock(run_dir):
        out = _run(
            Case(
                "busy",
                [str(BIN / "zapsweep"), "grid=smoke", f"hydra.run.dir={run_dir}"],
                ("pid",),
            )
        )
    lines = _message_lines(out["out"], out["err"])
    assert out["code"] == 2 and len(lines) == 1 and f"pid {os.getpid()}" in lines[0], out
    assert sorted(p.name for p in run_dir.iterdir()) == [RunDir.at(run_dir).lock.name, "keep"]


@pytest.mark.timeout(120)
def test_help_says_what_zapsweep_does_and_offers_no_schema():
    out = subprocess.run(
        [str(BIN / "zapsweep"), "--help"], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "tears down a TDP MMU" in text and "README" in text
    assert "grid: bench, fleet, full, kernels, seed, smoke, vms" in text
    assert "cost_model: seed-2022\n" in text and "ray: cluster, local" in text
    assert "kernel:" not in text  # presets are values of grid.kernel, not a config group
    assert "5.15, 5.18, 6.6, 6.9, 6.9-prove-mmu, 6.13, 6.14" in text
    assert "schema" not in text
    assert "ray.connect_timeout_s" in text and "hydra.run.dir=" in text
