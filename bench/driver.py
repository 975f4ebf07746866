"""Where the driver's CPU goes while it runs the bench grid on a local Ray.

    python bench/driver.py --rounds 3

Each round, on one local Ray (2 CPUs, workers warmed as the zapsweep command's
are), runs the bench grid twice, in a fresh process each, as the zapsweep
command does: once with the grid's twins worked out before Ray starts (as
``prepare`` does), once with them worked out in the loop (``run`` does it for
a grid that comes without).  It prints, per sweep, the driver's CPU (the
whole process: its main thread and Ray's threads in it), its main thread's,
the main thread's time in each of Ray's calls and in the writer, the minor
page faults and the garbage collections.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where bench/
# modules named like the packages (sweep.py, engine.py) would shadow them.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

CPUS = 2
MODES = ("twins first", "twins in loop")


def one_sweep(twins_first: bool) -> dict:
    """The bench grid swept once in this process, the driver's time taken apart."""
    import ray
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from engine import load_cost_model
    from sweep.dataset import ResultWriter, RunDir
    from sweep.run import runner
    from sweep.run.cells import RunSettings
    from sweep.run.config import register_configs
    from sweep.run.grid import Grid
    from sweep.run.session import init_local_ray, warm_workers

    register_configs()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["grid=bench"])
    grid = Grid.of(OmegaConf.to_container(cfg.grid))
    if twins_first:
        _ = grid.twins  # as prepare() does, before Ray starts
    settings = RunSettings("fast", load_cost_model("seed-2022"))
    spent: collections.Counter = collections.Counter()

    def timed(owner, name: str, label: str) -> None:
        call = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = time.thread_time()
            try:
                return call(*args, **kwargs)
            finally:
                spent[label] += time.thread_time() - start

        setattr(owner, name, wrapper)

    timed(ray, "wait", "ray.wait")
    timed(ray, "get", "ray.get")
    timed(ray, "put", "ray.put")
    timed(runner.RangeLoop, "submit", "submit")
    timed(ResultWriter, "place", "write, fsync, rename")
    init_local_ray(num_cpus=CPUS)
    warm_workers(CPUS)
    try:
        with tempfile.TemporaryDirectory(prefix="zapsweep-driver-") as tmp:
            writer = ResultWriter(RunDir.at(Path(tmp)), {})
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            before = [g["collections"] for g in gc.get_stats()]
            thread, process = time.thread_time(), time.process_time()
            stats = runner.run(runner.RunPlan(grid, settings), writer)
            out = {
                "twins_first": twins_first,
                "collections": [
                    g["collections"] - c for g, c in zip(gc.get_stats(), before, strict=True)
                ],
                "ranges": stats.batches,
                "sweep_s": stats.elapsed_s,
                "driver_cpu_s": time.process_time() - process,
                "main_thread_s": time.thread_time() - thread,
                "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
                **{k: round(v, 4) for k, v in spent.items()},
            }
            writer.close()
    finally:
        ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one_sweep(args.one == MODES[0])))
        return 0
    for _ in range(args.rounds):
        for mode in MODES:
            done = subprocess.run(
                [sys.executable, __file__, "--one", mode],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{mode:14s} driver CPU {figures['driver_cpu_s']:.3f} s, main thread "
                f"{figures['main_thread_s']:.3f} s, {figures['minor_faults']:5d} minor faults, "
                f"collections {figures['collections']}, {figures['ranges']} ranges, "
                f"sweep {figures['sweep_s']:.2f} s; main thread in: "
                + ", ".join(f"{k} {figures[k]:.3f}" for k in
                            ("submit", "ray.wait", "ray.get", "write, fsync, rename")),
                flush=True,
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
