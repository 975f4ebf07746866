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
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from engine import ENGINE_VERSION, ENGINES, ScenarioError, load_cost_model

from .cells import RunSettings
from .config import register_configs
from .grid import GridCounts, expand, grid_axes, grid_size
from .manifest import git_revision, read_manifest, versions, write_manifest
from .progress import Progress
from .results import ResultWriter, done_cell_ids
from .runner import ray_session, run_cells

log = logging.getLogger("zapsweep")

register_configs()


def sweep(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run the sweep ``cfg`` describes into ``run_dir``; return the manifest."""
    started = time.monotonic()
    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    grid_axes(grid)  # a malformed grid fails here, before Ray starts
    if cfg.engine not in ENGINES:
        raise ScenarioError("engine", cfg.engine, f"one of {list(ENGINES)}")
    model = load_cost_model(OmegaConf.to_container(cfg.cost_model, resolve=True))
    settings = RunSettings(engine=cfg.engine, cost_model=model)
    results_dir = run_dir / cfg.results_dir
    done = frozenset(done_cell_ids(results_dir))
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


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    sweep(cfg, run_dir)
    if cfg.report:
        _write_report(run_dir)


if __name__ == "__main__":
    main()
