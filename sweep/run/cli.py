"""``zapsweep``: the sweep as a Hydra app.

zapsweep                                   # the seed grid, local Ray
zapsweep grid=smoke engine=reference
zapsweep grid.vcpus=[1,64] grid.dirty_ratio=[0,1]
zapsweep ray.address=auto                  # an existing cluster
zapsweep hydra.run.dir=outputs/2026-01-01/12-00-00   # resume that run
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from engine import ENGINE_VERSION, ScenarioError, load_cost_model

from .cells import RunSettings
from .config import register_configs
from .grid import GridCounts, GridError, expand, grid_size
from .integrity import scan_results
from .lock import RunDirLocked, check_free, run_dir_lock
from .manifest import git_revision, read_manifest, versions, write_manifest
from .progress import Progress
from .results import ResultWriter
from .runner import ray_session, run_cells
from .validate import ConfigError, OutputError, check_config, check_overrides, probe_output

log = logging.getLogger("zapsweep")

register_configs()


def sweep(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run the sweep ``cfg`` describes into ``run_dir``; return the manifest.

    Before Ray starts: every setting and grid value is checked (ConfigError,
    GridError, ScenarioError name the key), the run directory is locked
    (RunDirLocked names the holder), and a probe is written where results go
    (OutputError).  Bad files in results/ are quarantined and their cells rerun.
    """
    started = time.monotonic()
    check_config(OmegaConf.to_container(cfg, resolve=True))
    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    model = load_cost_model(OmegaConf.to_container(cfg.cost_model, resolve=True))
    settings = RunSettings(engine=cfg.engine, cost_model=model)
    results_dir = run_dir / cfg.results_dir
    with run_dir_lock(run_dir):
        probe_output(results_dir)
        return _sweep(cfg, run_dir, grid, settings, results_dir, started)


def _sweep(
    cfg: DictConfig,
    run_dir: Path,
    grid: dict,
    settings: RunSettings,
    results_dir: Path,
    started: float,
) -> dict[str, Any]:
    scan = scan_results(results_dir)
    done = frozenset(scan.cell_ids)
    previous = read_manifest(run_dir)
    manifest: dict[str, Any] = {
        "run_dir": str(run_dir),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "running",
        "grid": grid,
        "engine": settings.engine,
        "engine_version": ENGINE_VERSION,
        "cost_model": {"name": settings.cost_model.name, "version": settings.cost_model.version},
        "git_revision": git_revision(),
        "versions": versions(),
        "resumed_from": {"cells_in_dataset": len(done)} if done else None,
        "quarantined": [
            {"path": str(b.path), "moved_to": str(b.moved_to), "reason": b.reason} for b in scan.bad
        ],
        "previous_runs": ((previous or {}).get("previous_runs") or [])
        + ([_summary(previous)] if previous else []),
    }
    write_manifest(run_dir, manifest)
    writer = ResultWriter(
        results_dir,
        metadata={
            "zapsweep.engine": settings.engine,
            "zapsweep.engine_version": ENGINE_VERSION,
            "zapsweep.cost_model": manifest["cost_model"],
            "zapsweep.git_revision": manifest["git_revision"] or "",
            "zapsweep.run_dir": str(run_dir),
        },
    )
    counts = GridCounts()
    dropped_seen = 0

    def dropped() -> int:
        nonlocal dropped_seen
        now = counts.excluded + counts.invalid
        delta, dropped_seen = now - dropped_seen, now
        return delta

    total = grid_size(grid)
    log.info("grid: %d combinations; %d cells already in %s", total, len(done), results_dir)
    with ray_session(cfg.ray):
        ray_ready = time.monotonic()
        cpu_at_start = time.process_time()
        progress = Progress(total, cfg.progress.bar, cfg.progress.log_interval_s)
        stats = run_cells(
            expand(grid, counts),
            settings,
            writer,
            done=done,
            batch_size=cfg.batch.size,
            max_in_flight=cfg.batch.max_in_flight,
            expected=total,
            max_retries=cfg.ray.max_retries,
            progress=progress,
            dropped=dropped,
        )
        progress.close()
        # CPU the driver itself spent expanding, hashing and writing: when it
        # nears sweep_s, the driver (not the workers) limits the sweep.
        driver_cpu_s = time.process_time() - cpu_at_start
    writer.close()
    if counts.invalid:
        log.info(
            "dropped %d invalid combinations: %s", counts.invalid, dict(counts.invalid_by_field)
        )
    manifest.update(
        status="complete",
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        counts={**counts.to_dict(), **stats.to_dict(), "rows_in_dataset": len(done) + writer.rows},
        timings={
            "ray_start_s": round(ray_ready - started, 3),
            "sweep_s": round(stats.elapsed_s, 3),
            "driver_cpu_s": round(driver_cpu_s, 3),
            "first_result_s": stats.first_result_s,
            "total_s": round(time.monotonic() - started, 3),
            # the driver's own peak resident memory (Linux reports KiB)
            "driver_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        },
    )
    write_manifest(run_dir, manifest)
    log.info(
        "%d cells run (%d failed), %d already there, %d duplicates, %d invalid, %d excluded -> %s",
        stats.ok + stats.failed,
        stats.failed,
        stats.resumed,
        stats.duplicates,
        counts.invalid,
        counts.excluded,
        results_dir,
    )
    return manifest


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    keep = ("started_at", "finished_at", "status", "counts", "timings")
    return {k: manifest.get(k) for k in keep}


def _write_report(run_dir: Path) -> None:
    try:
        from . import report_cli
    except ImportError:
        log.warning("no report module yet; run zapsweep-report on %s later", run_dir)
        return
    report_cli.main([str(run_dir)])


# Errors that are the user's to fix: one line naming the key / path / holder, exit 2.
USER_ERRORS = (ConfigError, GridError, ScenarioError, RunDirLocked, OutputError)


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        sweep(cfg, run_dir)
    except USER_ERRORS as err:
        log.error("%s", err)
        sys.exit(2)
    except OSError as err:  # e.g. the disk filled up mid-sweep
        log.error(
            "cannot write results: %s. Every file already in %s is whole; run the same "
            "command again (hydra.run.dir=%s) to resume",
            err,
            run_dir / cfg.results_dir,
            run_dir,
        )
        sys.exit(2)
    if cfg.report:
        _write_report(run_dir)


def main() -> None:
    """The ``zapsweep`` console script: unknown keys are named before Hydra composes."""
    args = sys.argv[1:]
    try:
        check_overrides(args)
        for arg in args:  # an explicit run dir: refuse before Hydra writes into it
            if arg.startswith("hydra.run.dir="):
                check_free(arg.split("=", 1)[1])
    except (ConfigError, RunDirLocked) as err:
        print(f"zapsweep: {err}", file=sys.stderr)
        sys.exit(2)
    _main()


if __name__ == "__main__":
    main()
