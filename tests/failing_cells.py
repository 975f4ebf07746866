"""Sweeps on a Ray whose workers fail the cells of some seeds, listed in a
file: the failures are real (``simulate`` raises inside the worker, and the
cell becomes an error row), injected by a worker setup hook.  Prints what
came out as JSON.

Run by tests/test_retry.py in a subprocess of its own, so that this Ray and
its hook never meet the test session's.

    python failing_cells.py SEEDS_FILE RETRY_RUN STOP_RUN
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import ray

import sweep

OVERRIDES = [
    "grid.paging_levels=[4]",
    "grid.page_size=[4K]",
    "grid.guest_memory=[16MiB]",
    "grid.zap_levels=[root,two_pass]",
    "grid.dirty_ratio=[0.5]",
    "grid.seed=[0,1,2]",
    "grid.exclude=[]",
    "report=false",
    "progress.bar=false",
]


def failing_hook(seeds_file: str):
    def install() -> None:
        """In each worker: the cells whose seed is listed in ``seeds_file`` raise."""
        from pathlib import Path

        from sweep.run import cells

        real = cells.simulate

        def simulate(scenario, *args, **kwargs):
            listed = Path(seeds_file)
            if listed.exists() and str(scenario.seed) in listed.read_text().split():
                raise RuntimeError(f"injected failure of a seed-{scenario.seed} cell")
            return real(scenario, *args, **kwargs)

        cells.simulate = simulate

    return install


def main(seeds_file: Path, retry_run: Path, stop_run: Path) -> dict:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    seeds_file.write_text("1\n")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": failing_hook(str(seeds_file))},
    )
    out: dict = {}
    res = sweep.run(grid="smoke", overrides=OVERRIDES, run_dir=retry_run)
    out["retry_run"] = {
        "status": res.status,
        "rows": res.frame.select("cell_id", "seed", "status", "error").to_dicts(),
    }
    # The command line, in this process: its sweep runs on this Ray.
    from sweep.run.cli import main as zapsweep

    sys.argv = [
        "zapsweep",
        "grid=smoke",
        *OVERRIDES,
        "max_failures=1",
        "batch.size=1",
        "batch.max_in_flight=1",
        f"hydra.run.dir={stop_run}",
    ]
    try:
        zapsweep()
        out["stop_exit"] = 0
    except SystemExit as stop:
        out["stop_exit"] = stop.code
    out["ray_still_up"] = ray.is_initialized()
    ray.shutdown()
    return out


if __name__ == "__main__":
    print(json.dumps(main(*(Path(a) for a in sys.argv[1:4])), default=str))
