"""A corpus of bad ``zapsweep`` command lines, and a runner that feeds them to the CLI.

Each case is (id, overrides, key, allowed): the overrides go to ``zapsweep``
on top of a small valid base (``grid=smoke engine=reference``); the error
message must name ``key`` and contain ``allowed`` (a piece of the allowed
values).  Run as a script (``bad_configs.py [SHARD SHARDS]``), this module
runs every case (of its shard) through the CLI's Python entry point
(``sweep.run.cli.main``) in this one process and prints, per
case, the exit code, the message, and whether Ray was started: it must not be,
so the script checks ``ray.is_initialized()`` and this process's children
(a raylet or GCS would be one) after each case.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

BASE = {"grid": "smoke", "engine": "reference", "report": "false", "progress.bar": "false"}

CASES: list[tuple[str, list[str], str, str]] = [
    # unknown keys: named, with the keys that exist
    ("unknown-axis", ["grid.vcpu=[1]"], "grid.vcpu", "vcpus"),
    ("unknown-axis-added", ["+grid.vcpu=1"], "grid.vcpu", "'vcpus'"),
    ("unknown-top-key", ["foo=1"], "foo", "'grid'"),
    ("unknown-batch-key", ["batch.sise=3"], "batch.sise", "'size'"),
    ("unknown-ray-key", ["ray.adress=auto"], "ray.adress", "'address'"),
    ("unknown-progress-key", ["progress.barr=true"], "progress.barr", "'bar'"),
    ("subkey-of-a-value", ["engine.name=fast"], "engine.name", "plain value"),
    # wrong types (Hydra's structured config names the key and the type)
    ("vcpus-not-int", ["grid.vcpus=[abc]"], "grid.vcpus", "Integer"),
    ("flush-not-bool", ["grid.flush_on_yield=[maybe]"], "grid.flush_on_yield", "bool"),
    ("batch-size-not-int", ["batch.size=many"], "batch.size", "Integer"),
    ("dirty-not-float", ["grid.dirty_ratio=[half]"], "grid.dirty_ratio", "Float"),
    ("interval-not-float", ["progress.log_interval_s=soon"], "progress.log_interval_s", "Float"),
    # empty axes and malformed grids
    ("empty-vcpus", ["grid.vcpus=[]"], "grid.vcpus", "at least one value"),
    ("empty-zap-levels", ["grid.zap_levels=[]"], "grid.zap_levels", "at least one value"),
    ("zip-unequal", ["grid.vcpus=[1,2]", "grid.zip=[[vcpus,seed]]"], "grid.zip[0]", "equal"),
    ("exclude-unknown", ["grid.exclude=[{vcpu:1}]"], "grid.exclude[0]", "Scenario field"),
    ("exclude-everything", ["grid.exclude=[{paging_levels:[4,5]}]"], "grid.exclude", "at least"),
    # config groups that do not exist: Hydra lists the options
    ("no-such-grid", ["grid=smok"], "grid", "smoke"),
    ("no-such-cost-model", ["cost_model=nope"], "cost_model", "seed-2022"),
    ("no-such-ray", ["ray=clustr"], "ray", "local"),
    # settings
    ("unknown-engine", ["engine=bogus"], "engine", "['fast', 'reference']"),
    ("batch-size-zero", ["batch.size=0"], "batch.size", ">= 1"),
    ("in-flight-negative", ["batch.max_in_flight=-2"], "batch.max_in_flight", ">= 1"),
    ("retries-negative", ["ray.max_retries=-1"], "ray.max_retries", ">= 0"),
    ("num-cpus-zero", ["ray.num_cpus=0"], "ray.num_cpus", ">= 1"),
    ("object-store-tiny", ["ray.object_store_memory=1000"], "ray.object_store_memory", ">= "),
    ("log-interval-zero", ["progress.log_interval_s=0"], "progress.log_interval_s", "> 0"),
    ("log-interval-nan", ["progress.log_interval_s=nan"], "progress.log_interval_s", "> 0"),
    ("results-dir-escapes", ["results_dir=../elsewhere"], "results_dir", "'..'"),
    ("results-dir-reserved", ["results_dir=quarantine"], "results_dir", "quarantine"),
    ("address-blank", ["ray.address=' '"], "ray.address", "'auto'"),
    ("cost-negative", ["cost_model.costs.visit_ns=-1"], "cost_model.visit_ns", ">= 0"),
    ("cost-unknown", ["+cost_model.costs.bogus_ns=1"], "cost_model", "visit_ns"),
    # values no cell accepts: named with the allowed values
    ("vcpus-negative", ["grid.vcpus=[-1]"], "grid.vcpus", "integer >= 1"),
    ("vcpus-zero-among-good", ["grid.vcpus=[0,4]"], "grid.vcpus", "integer >= 1"),
    ("dirty-nan", ["grid.dirty_ratio=[nan]"], "grid.dirty_ratio", "[0, 1]"),
    ("dirty-negative", ["grid.dirty_ratio=[-0.5]"], "grid.dirty_ratio", "[0, 1]"),
    ("accessed-above-one", ["grid.accessed_ratio=[1.5]"], "grid.accessed_ratio", "[0, 1]"),
    ("populated-inf", ["grid.populated_ratio=[inf]"], "grid.populated_ratio", "[0, 1]"),
    ("memory-decimal-unit", ["grid.guest_memory=[12TB]"], "grid.guest_memory", "GiB"),
    ("memory-negative", ["grid.guest_memory=[-1GiB]"], "grid.guest_memory", "positive"),
    ("memory-overflow", ["grid.guest_memory=[1e400]"], "grid.guest_memory", "positive"),
    ("memory-zero", ["grid.guest_memory=[0]"], "grid.guest_memory", "positive"),
    (
        "memory-not-page-multiple",
        ["grid.guest_memory=[12KiB]", "grid.page_size=[2M]"],
        "grid.guest_memory",
        "multiple of the page size",
    ),  # fmt: skip
    ("paging-three", ["grid.paging_levels=[3]"], "grid.paging_levels", "[4, 5]"),
    # kernels, triggers, roots, contention
    ("kernel-unknown", ['grid.kernel=["7.0"]'], "grid.kernel", "'6.14'"),
    ("kernel-among-good", ['grid.kernel=["6.6","5.4"]'], "grid.kernel", "'5.15'"),
    ("trigger-unknown", ["grid.trigger=[reboot]"], "grid.trigger", "'vm_destroy'"),
    ("preempt-unknown", ["grid.preempt=[rt]"], "grid.preempt", "'voluntary'"),
    (
        "preempt-lazy-on-6.6",
        ['grid.kernel=["6.6"]', "grid.preempt=[lazy]"],
        "grid.preempt",
        "'full'",
    ),
    ("contention-zero", ["grid.lock_contention_us=[0]"], "grid.lock_contention_us", "null"),
    ("contention-negative", ["grid.lock_contention_us=[-5]"], "grid.lock_contention_us", "null"),
    ("smm-above-one", ["grid.smm_populated_ratio=[1.5]"], "grid.smm_populated_ratio", "[0, 1]"),
    ("smm-negative", ["grid.smm_populated_ratio=[-0.1]"], "grid.smm_populated_ratio", "[0, 1]"),
    ("root-zap-unknown", ["grid.root_zap=[async]"], "grid.root_zap", "'parallel'"),
    (
        "zap-levels-kernel-without-one",
        ["grid.zap_levels=[kernel]"],
        "grid.zap_levels",
        "kernel preset",
    ),
    ("cost-model-retired", ["cost_model=upstream-6.13"], "cost_model", "seed-2022"),
    ("page-size-8k", ["grid.page_size=[8K]"], "grid.page_size", "'2M'"),
    (
        "zap-512g-on-4-level",
        ["grid.paging_levels=[4]", "grid.zap_levels=['512G,root']"],
        "grid.zap_levels",
        "root",
    ),  # fmt: skip
    ("zap-unknown-name", ["grid.zap_levels=[bogus]"], "grid.zap_levels", "two_pass"),
    ("zap-descending", ["grid.zap_levels=['root,1G']"], "grid.zap_levels", "ascending"),
    ("resched-unknown", ["grid.resched=[sometimes]"], "grid.resched", "tick"),
    ("mmu-lock-unknown", ["grid.mmu_lock=[none]"], "grid.mmu_lock", "read"),
    ("seed-negative", ["grid.seed=[-3]"], "grid.seed", "[0, "),
    (
        "resched-interval-zero",
        ["grid.resched_interval_us=[0]"],
        "grid.resched_interval_us",
        "finite",
    ),
    ("stall-timeout-nan", ["grid.rcu_stall_timeout_s=[nan]"], "grid.rcu_stall_timeout_s", "finite"),
    ("phys-bits-99", ["grid.host_phys_bits=[99]"], "grid.host_phys_bits", "[32, 52]"),
    # every cell invalid through a combination of otherwise good values
    (
        "dirty-above-accessed",
        ["grid.dirty_ratio=[1.0]", "grid.accessed_ratio=[0.5]"],
        "grid.dirty_ratio",
        "at most accessed_ratio",
    ),  # fmt: skip
    (
        "memory-beyond-phys-bits",
        ["grid.guest_memory=[16TiB]", "grid.paging_levels=[4]", "grid.host_phys_bits=[40]"],
        "grid.guest_memory",
        "host_phys_bits",
    ),  # fmt: skip
]


def _argv(overrides: list[str], run_dir: Path) -> list[str]:
    args = dict(BASE)
    extra = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key in args:
            args[key] = value
        else:
            extra.append(o)
    return [f"{k}={v}" for k, v in args.items()] + extra + [f"hydra.run.dir={run_dir}"]


def _children() -> list[int]:
    me = str(os.getpid())
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            kids.append(int(stat.parent.name))
    return kids


def run_all(shard: int = 0, shards: int = 1) -> list[dict]:
    import ray

    from sweep.run import cli

    out = []
    root = Path(tempfile.mkdtemp(prefix="zapsweep-bad-"))
    for name, overrides, _key, _allowed in CASES[shard::shards]:
        run_dir = root / name / "run"
        argv = ["zapsweep", *_argv(overrides, run_dir)]
        err = io.StringIO()
        code = 0
        sys.argv = argv
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            try:
                cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
        out.append(
            {
                "case": name,
                "argv": argv,
                "code": code,
                "message": err.getvalue(),
                "ray_initialized": ray.is_initialized(),
                "children": _children(),
                "run_dir_left": run_dir.parent.exists(),  # made by this case, with parents
                "results": sorted(str(p) for p in (run_dir / "results").rglob("*"))
                if (run_dir / "results").exists()
                else [],
            }
        )
        if ray.is_initialized():  # a failure of the test; do not let it leak
            ray.shutdown()
    return out


if __name__ == "__main__":
    json.dump(run_all(*map(int, sys.argv[1:3])), sys.stdout)
