"""Throughput of zapsweep against the alternatives, on the same cells.

    python bench/sweep.py                 # everything, figures to stdout + JSON
    python bench/sweep.py --only serial,zapsweep --rounds 5

Measures, on the 10,000 cells of ``grid=bench`` (conf/grid/bench.yaml), with
the fast engine and 2 CPUs:

- ``loop``: a plain in-process loop over ``engine.simulate``;
- ``serial``: zapsweep's own batch function (``sweep.run.cells.run_range``:
  expand a range of the grid, validate, hash, simulate with cells of one VM
  shape sharing their page table and passes, build the Arrow table) over the
  same grid in one process, ranges of 256: what a worker does, without Ray;
  warmed first as zapsweep's workers are while Ray starts (``warm_up``: a
  one-cell sweep);
- ``zapsweep``: the ``zapsweep`` command (Ray with ``ray.num_cpus=2``, Parquet
  written); cells/s over the sweep itself, and over the whole command (Ray start
  and shutdown included); the driver's own CPU time;
- ``serial`` and ``zapsweep`` run ``--rounds`` times (3) alternately, so that
  both meet the same moods of a shared machine (its speed moves by 20 % within
  seconds); each is reported by its median round, the ratio per round and
  their median;
- ``cores``: what two cores give ``serial`` here without Ray (the ceiling of the
  ratio above): the grid's halves in two processes, alone and side by side;
- ``ranges``: ranges sized by time (the default) against fixed ranges of 256
  combinations (as before ranges were sized by time), alternately in one process
  on one local Ray: the sweep's wall time, the driver's CPU, the ranges;
- ``encode``: where a range's rows become Parquet, the same way: on the workers
  (the default: the driver only writes bytes) or on the driver (workers return
  Arrow tables);
- ``fsync``: the price of durability: the driver's writer on the bench's rows,
  fsyncs on and off;
- ``tune``: the same cells as trials of Ray Tune's ``grid_search``; Tune
  takes seconds per trial here, so by default only the first
  ``--tune-cells`` (200) run and cells/s is compared (``--tune-cells 10000``
  runs them all, for hours);
- ``multirun``: the first ``--multirun-cells`` (200) cells as Hydra
  ``--multirun`` jobs with the hydra-ray-launcher, per cell;
- ``big``: a 10^6-cell grid (``--big-seeds 1000``) through ``zapsweep``: time to
  first result and the driver's peak resident memory.

Needs the ``bench`` extra (ray[tune], hydra-ray-launcher).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where bench/
# modules named like the packages (sweep.py, engine.py) would shadow them.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from hydra import compose, initialize_config_module  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from engine import Scenario, load_cost_model, simulate  # noqa: E402
from sweep.run.config import register_configs  # noqa: E402
from sweep.run.grid import Grid, expand  # noqa: E402

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
CPUS = 2


def bench_grid(grid: str = "bench") -> dict:
    register_configs()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"grid={grid}"])
    return OmegaConf.to_container(cfg.grid)


def bench_scenarios(grid: str = "bench") -> list[Scenario]:
    return list(expand(bench_grid(grid)))


def run_loop(scenarios: list[Scenario]) -> dict:
    model = load_cost_model("seed-2022")  # parsed once, as zapsweep's workers do
    start = time.perf_counter()
    for scenario in scenarios:
        simulate(scenario, engine="fast", cost_model=model)
    seconds = time.perf_counter() - start
    return {"cells": len(scenarios), "seconds": seconds, "cells_per_s": len(scenarios) / seconds}


def run_serial(batch: int = 256) -> dict:
    from sweep.run.cells import RunSettings, run_range
    from sweep.run.task import warm_up

    grid = Grid.of(bench_grid())
    settings = RunSettings("fast", load_cost_model("seed-2022"))
    # Warmed as zapsweep's workers are while Ray starts (a one-cell sweep: the
    # engine's compiled kernels loaded, pyarrow's first rows and file), untimed.
    warm_up()
    start = time.perf_counter()
    cells = sum(
        run_range(grid, settings, lo, lo + batch).counts.ok for lo in range(0, grid.size, batch)
    )
    seconds = time.perf_counter() - start
    return {"cells": cells, "seconds": seconds, "cells_per_s": cells / seconds}


def run_half(half: int, start_at: float) -> float:
    """``serial`` over one half of the bench grid (warmed first), from ``start_at``
    (a time.time()), in seconds."""
    from sweep.run.cells import RunSettings, run_range
    from sweep.run.task import warm_up

    grid = Grid.of(bench_grid())
    settings = RunSettings("fast", load_cost_model("seed-2022"))
    warm_up()
    lo, hi = (0, grid.size // 2) if half == 0 else (grid.size // 2, grid.size)
    time.sleep(max(0.0, start_at - time.time()))
    start = time.perf_counter()
    for at in range(lo, hi, 256):
        run_range(grid, settings, at, min(at + 256, hi))
    return time.perf_counter() - start


def run_cores(rounds: int) -> dict:
    """What two cores give ``serial`` here, without Ray: the grid's two halves in
    two processes, one after the other, then side by side."""

    def halves(together: bool) -> list[float]:
        def start(half: int, at: float) -> subprocess.Popen:
            argv = [sys.executable, __file__, "--half", str(half), "--start-at", str(at)]
            return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

        if together:
            at = time.time() + 5  # both warmed by then
            procs = [start(0, at), start(1, at)]
        else:
            procs = []
            for half in (0, 1):
                procs.append(start(half, time.time() + 5))
                procs[-1].wait()
        return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]

    out = []
    for _ in range(rounds):
        alone, together = halves(False), halves(True)
        out.append(
            {"alone_s": alone, "together_s": together, "speedup": sum(alone) / max(together)}
        )
        print("cores", out[-1], flush=True)
    return {"rounds": out, "speedup_median": statistics.median(r["speedup"] for r in out)}


def median_round(rounds: list[dict], key: str) -> dict:
    """The round whose ``key`` is the median (the upper one of an even count)."""
    return sorted(rounds, key=lambda r: r[key])[len(rounds) // 2]


def run_plans(workdir: Path, variants: dict[str, dict], rounds: int = 3) -> dict:
    """The bench grid's sweep on one local Ray (its workers warmed, as the
    zapsweep command's are), once per round for each of ``variants`` (RunPlan
    settings), alternately; each variant's rounds and its best (sweep wall
    time, the driver's CPU, ranges)."""
    import ray

    from sweep.dataset import ResultWriter, RunDir
    from sweep.run.cells import RunSettings
    from sweep.run.runner import RunPlan, run
    from sweep.run.session import init_local_ray, warm_workers

    grid = Grid.of(bench_grid())
    _ = grid.twins  # as the zapsweep command does, before Ray starts
    settings = RunSettings("fast", load_cost_model("seed-2022"))
    init_local_ray(num_cpus=CPUS)
    warm_workers(CPUS)
    out: dict = {name: [] for name in variants}
    try:
        for i in range(rounds):
            for name, plan in variants.items():
                writer = ResultWriter(RunDir.at(workdir / f"plan-{name}-{i}"), {})
                cpu, wall = time.process_time(), time.perf_counter()
                stats = run(RunPlan(grid, settings, **plan), writer)
                out[name].append(
                    {
                        "sweep_seconds": time.perf_counter() - wall,
                        "driver_cpu_s": time.process_time() - cpu,
                        "first_result_seconds": stats.first_result_s,
                        "ranges": stats.batches,
                        "worker_s": stats.worker_s,
                        "cells": stats.ok,
                    }
                )
                writer.close()
                print(name, out[name][-1], flush=True)
    finally:
        ray.shutdown()
    for name in variants:
        out[f"{name}_best"] = {
            k: min(r[k] for r in out[name]) for k in ("sweep_seconds", "driver_cpu_s")
        }
    return out


def run_fsync(workdir: Path, batch: int = 256) -> dict:
    """The driver's writer on the bench's rows (encoded once), fsyncs on and off."""
    from unittest import mock

    from sweep.dataset import ResultWriter, RunDir, encode
    from sweep.run.cells import RunSettings, run_range

    grid = Grid.of(bench_grid())
    settings = RunSettings("fast", load_cost_model("seed-2022"))
    files = [
        encode(run_range(grid, settings, lo, lo + batch).rows, {})
        for lo in range(0, grid.size, batch)
    ]
    out = {}
    for label, patch in (("fsync", None), ("no_fsync", mock.patch("os.fsync"))):
        for i in range(2):
            writer = ResultWriter(RunDir.at(workdir / f"{label}-{i}"), {})
            if patch is not None:
                patch.start()
            start = time.perf_counter()
            placed = sum(len(writer.place(f)) for f in files)
            seconds = time.perf_counter() - start
            if patch is not None:
                patch.stop()
            out.setdefault(label, []).append({"seconds": seconds, "files": placed})
    best = {k: min(r["seconds"] for r in v) for k, v in out.items()}
    out["fsync_cost_per_file_ms"] = (
        (best["fsync"] - best["no_fsync"]) / out["fsync"][0]["files"] * 1e3
    )
    out["fsync_cost_per_10k_cells_s"] = (best["fsync"] - best["no_fsync"]) * 10_000 / grid.size
    return out


def run_zapsweep(overrides: list[str], workdir: Path) -> dict:
    run_dir = workdir / f"zapsweep-{time.time_ns()}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.perf_counter()
    subprocess.run(
        [
            str(BIN / "zapsweep"),
            "engine=fast",
            f"ray.num_cpus={CPUS}",
            "report=false",
            "progress.bar=false",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cells = manifest["counts"]["ok"] + manifest["counts"]["failed"]
    t = manifest["timings"]
    return {
        "cells": cells,
        "failed": manifest["counts"]["failed"],
        "command_seconds": wall,
        "sweep_seconds": t["sweep_s"],
        "ray_start_seconds": t["ray_start_s"],
        "ranges": manifest["counts"]["batches"],
        "worker_s": manifest["counts"].get("worker_s"),
        "driver_cpu_s": t["driver_cpu_s"],
        "driver_cpu_s_per_10k_cells": t["driver_cpu_s"] * 10_000 / max(cells, 1),
        "first_result_seconds": t["first_result_s"],
        "driver_peak_rss_mib": t["driver_peak_rss_bytes"] / 2**20,
        "cells_per_s": cells / t["sweep_s"],
        "cells_per_s_command": cells / wall,
    }


def run_tune(scenarios: list[Scenario], workdir: Path) -> dict:
    import ray
    from ray import tune

    model = load_cost_model("seed-2022")

    def trainable(config):
        return simulate(Scenario(**config["cell"]), engine="fast", cost_model=model).to_dict()

    # Tune's best case: no TensorBoard/CSV/JSON loggers per trial.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    cells = [{**s.to_dict(), "zap_levels": ",".join(s.zap_levels)} for s in scenarios]
    ray.init(address="local", num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"cell": tune.grid_search(cells)},
            run_config=tune.RunConfig(storage_path=str(workdir / "tune"), name="bench", verbose=0),
        )
        start = time.perf_counter()
        results = tuner.fit()
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    ok = sum(1 for r in results if r.error is None)
    return {"cells": len(scenarios), "ok": ok, "seconds": seconds, "cells_per_s": ok / seconds}


def run_multirun(cells: int, workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(HERE / "multirun_cell.py"),
            "--multirun",
            "hydra/launcher=ray",
            f"+hydra.launcher.ray.init.num_cpus={CPUS}",
            "+hydra.launcher.ray.init.include_dashboard=false",
            f"hydra.sweep.dir={workdir / 'multirun'}",
            f"idx=range(0,{cells})",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    return {"cells": cells, "seconds": seconds, "seconds_per_cell": seconds / cells}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = "loop,serial,zapsweep,cores,ranges,encode,fsync,tune,multirun,big"
    p.add_argument("--only", default=parts)
    p.add_argument("--tune-cells", type=int, default=200, help="the first N bench cells")
    p.add_argument("--multirun-cells", type=int, default=200)
    p.add_argument("--big-seeds", type=int, default=1000, help="10^6 cells = 1000 x seeds")
    p.add_argument("--rounds", type=int, default=3, help="of the parts that alternate")
    p.add_argument("--out", type=Path, default=Path("outputs/bench-sweep.json"))
    p.add_argument("--half", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.half is not None:  # one process of the cores part
        print(run_half(args.half, args.start_at))
        return 0
    only = set(args.only.split(","))
    scenarios = bench_scenarios()
    figures: dict = {"cells": len(scenarios), "cpus": CPUS}
    with tempfile.TemporaryDirectory(prefix="zapsweep-bench-") as tmp:
        work = Path(tmp)
        if "loop" in only:
            figures["loop"] = run_loop(scenarios)
            print("loop", figures["loop"], flush=True)
        rounds: dict[str, list[dict]] = {"serial": [], "zapsweep": []}
        for _ in range(args.rounds):  # alternately: both see the machine's same moods
            if "serial" in only:
                rounds["serial"].append(run_serial())
                print("serial", rounds["serial"][-1], flush=True)
            if "zapsweep" in only:
                rounds["zapsweep"].append(run_zapsweep(["grid=bench"], work))
                print("zapsweep", rounds["zapsweep"][-1], flush=True)
        for name, key in (("serial", "seconds"), ("zapsweep", "sweep_seconds")):
            if rounds[name]:
                figures[name] = {**median_round(rounds[name], key), "rounds": rounds[name]}
        if "cores" in only:
            figures["cores"] = run_cores(args.rounds)
        if "ranges" in only:
            sizes = {"by_time": {}, "fixed_256": {"batch_size": 256}}
            figures["ranges"] = run_plans(work, sizes, args.rounds)
        if "encode" in only:
            places = {"worker": {"encode_on": "worker"}, "driver": {"encode_on": "driver"}}
            figures["encode"] = run_plans(work, places, args.rounds)
        if "fsync" in only:
            figures["fsync"] = run_fsync(work)
            print("fsync", figures["fsync"], flush=True)
        if "tune" in only:
            figures["tune"] = run_tune(scenarios[: args.tune_cells], work)
            print("tune", figures["tune"], flush=True)
        if "multirun" in only:
            figures["multirun"] = run_multirun(args.multirun_cells, work)
            print("multirun", figures["multirun"], flush=True)
        if "big" in only:
            seeds = ",".join(map(str, range(args.big_seeds)))
            big = [
                "grid=bench",
                "grid.page_size=[1G]",
                "grid.guest_memory=[1GiB,2GiB,4GiB,8GiB,16GiB]",
                f"grid.seed=[{seeds}]",
            ]
            figures["big"] = run_zapsweep(big, work)
            print("big", figures["big"], flush=True)
    ratios = {}
    if "loop" in figures and "zapsweep" in figures:
        ratios["zapsweep_vs_loop"] = (
            figures["zapsweep"]["cells_per_s"] / figures["loop"]["cells_per_s"]
        )
    if "serial" in figures and "zapsweep" in figures:
        # Each round's ratio pairs two runs a few seconds apart: the machine's
        # speed, which moves by 20 % within seconds, cancels out best there.
        per_round = [
            z["cells_per_s"] / s["cells_per_s"]
            for s, z in zip(rounds["serial"], rounds["zapsweep"], strict=True)
        ]
        ratios["zapsweep_vs_serial_batches"] = statistics.median(per_round)
        ratios["zapsweep_vs_serial_batches_per_round"] = per_round
    if "zapsweep" in figures:
        ratios["driver_cpu_s_per_10k_cells_per_round"] = [
            z["driver_cpu_s_per_10k_cells"] for z in rounds["zapsweep"]
        ]
    if "ranges" in figures:
        by_time, fixed = figures["ranges"]["by_time_best"], figures["ranges"]["fixed_256_best"]
        for key in ("sweep_seconds", "driver_cpu_s"):  # fixed / by time: above 1, time wins
            ratios[f"ranges_fixed_256_vs_by_time_{key}"] = fixed[key] / by_time[key]
    if "tune" in figures and "zapsweep" in figures:
        ratios["zapsweep_vs_tune"] = (
            figures["zapsweep"]["cells_per_s"] / figures["tune"]["cells_per_s"]
        )
    if "multirun" in figures and "zapsweep" in figures:
        ratios["zapsweep_vs_multirun_per_cell"] = (
            figures["multirun"]["seconds_per_cell"] * (figures["zapsweep"]["cells_per_s_command"])
        )
    figures["ratios"] = ratios
    print(json.dumps(ratios, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
