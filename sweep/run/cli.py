"""``zapsweep``: the sweep as a Hydra app.

zapsweep                                   # the seed grid, local Ray
zapsweep grid=smoke engine=reference
zapsweep grid.vcpus=[1,64] grid.dirty_ratio=[0,1]
zapsweep ray.address=auto                  # an existing cluster
zapsweep hydra.run.dir=outputs/2026-01-01/12-00-00   # resume that run
"""

from __future__ import annotations

import contextlib
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

from engine import ENGINE_VERSION, ScenarioError, kernel_preset, load_cost_model
from sweep.dataset import (
    Provenance,
    ResultWriter,
    RunDir,
    Scan,
    check_dataset,
    finish_superseding,
    quarantine,
    read_manifest,
    write_manifest,
)

from .cells import RunSettings
from .config import register_configs
from .grid import Grid, GridError
from .inventory import Inventory, path_override, read_inventory
from .lock import RunDirLocked, check_free, run_dir_lock
from .progress import Progress
from .retry import prepare_retry, recorded_overrides
from .runner import RunPlan, SweepStats, run
from .session import ray_session
from .validate import (
    ConfigError,
    OutputError,
    check_config,
    check_overrides,
    check_settings,
    probe_output,
)

log = logging.getLogger("zapsweep")

register_configs()


def sweep(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run the sweep ``cfg`` describes into ``run_dir``; return the manifest.

    Before Ray starts: every setting, grid value and inventory row is checked
    (ConfigError, InventoryError, GridError, ScenarioError name the key, or
    the row and column), the run directory is locked (RunDirLocked names the
    holder), and a probe is written where results go (OutputError).  Bad
    files in results/ are quarantined and their cells rerun.  With
    ``retry=errors`` the run's failed cells run again, and nothing else.
    """
    started = time.monotonic()
    settings, grid, inventory = prepare(cfg)
    run_at = RunDir.at(run_dir, cfg.results_dir)
    with run_dir_lock(run_dir):
        probe_output(run_at)
        scan = _quarantine_bad_files(run_at)
        retry = None
        if finish_superseding(run_at):  # a retry stopped between its two steps
            scan = check_dataset(run_at)
        if cfg.retry == "errors":
            retry = prepare_retry(run_at, settings)
            grid, scan = retry.grid, check_dataset(run_at)
            log.info(
                "retry=errors: %d failed cells run again; %d files moved to %s",
                retry.cells,
                len(retry.superseded),
                run_at.superseded,
            )
        plan = RunPlan(
            grid,
            settings,
            done=scan.keys(),
            batch_size=cfg.batch.size,
            max_in_flight=cfg.batch.max_in_flight,
            max_retries=cfg.ray.max_retries,
            max_failures=cfg.max_failures,
        )
        previous = read_manifest(run_at) or {}
        extra = {
            "inventory": inventory.describe() if inventory else previous.get("inventory"),
            "retry": retry.as_dict() if retry else None,
        }
        return _run(cfg, run_at, plan, scan, started, extra)


def prepare(cfg: DictConfig) -> tuple[RunSettings, Grid | None, Inventory | None]:
    """Every check of the settings, the inventory and the grid; what the
    sweep runs.  A retry runs the failed rows, not the grid: its grid (None)
    comes from the run directory."""
    config = OmegaConf.to_container(cfg, resolve=True)
    inventory = grid = None
    if config["retry"] is not None:
        check_settings(config)
    else:
        inventory = read_inventory(config["inventory"]["path"])
        rows = inventory.axis() if inventory else None
        check_config(config, rows)
        grid = Grid.of(config["grid"], rows)
    model = load_cost_model(config["cost_model"])
    return RunSettings(engine=cfg.engine, cost_model=model), grid, inventory


def _quarantine_bad_files(run_at: RunDir) -> Scan:
    scan = check_dataset(run_at)
    scan.bad = [quarantine(run_at, bad) for bad in scan.bad]
    for bad in scan.bad:
        log.warning(
            "bad results file %s (%s): moved to %s; its cells will run again",
            bad.path,
            bad.reason,
            bad.moved_to,
        )
    return scan


def _run(
    cfg: DictConfig, run_at: RunDir, plan: RunPlan, scan: Scan, started: float, extra: dict
) -> dict:
    """Write the manifest, run the plan, write the manifest again with what happened."""
    provenance = Provenance.of(
        run_at, plan.settings.engine, ENGINE_VERSION, plan.settings.cost_model
    )
    manifest = {**_manifest_at_start(cfg, run_at, provenance, scan, len(plan.done)), **extra}
    write_manifest(run_at, manifest)
    writer = ResultWriter(run_at, provenance.file_metadata())
    log.info(
        "grid: %d combinations; %d cells already in %s",
        plan.grid.size,
        len(plan.done),
        run_at.results,
    )
    # A grid without cells (a retry with nothing failed) needs no Ray.
    with ray_session(cfg.ray) if plan.grid.size else contextlib.nullcontext():
        ray_ready = time.monotonic()
        cpu_at_start = time.process_time()
        progress = Progress(plan.grid.size, cfg.progress.bar, cfg.progress.log_interval_s)
        stats = run(plan, writer, progress)
        progress.close()
        # CPU the driver itself spent handing out ranges and writing: when it
        # nears sweep_s, the driver (not the workers) limits the sweep.
        driver_cpu_s = time.process_time() - cpu_at_start
    writer.close()
    manifest.update(
        status="complete" if stats.stopped is None else "stopped",
        stopped_because=stats.stopped,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        counts={**stats.to_dict(), "rows_in_dataset": len(plan.done) + writer.rows},
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
    write_manifest(run_at, manifest)
    _log_outcome(stats, run_at)
    return manifest


def kernel_settings(grid: dict[str, Any]) -> dict[str, Any]:
    """The resolved settings of every kernel preset the grid names, per trigger."""
    names = grid.get("kernel") or []
    names = names if isinstance(names, list) else [names]
    return {name: kernel_preset(name).to_dict() for name in dict.fromkeys(names) if name}


def _manifest_at_start(
    cfg: DictConfig, run_at: RunDir, provenance: Provenance, scan: Scan, done: int
) -> dict[str, Any]:
    previous = read_manifest(run_at)
    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    return {
        **provenance.as_dict(),
        "results_dir": cfg.results_dir,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "running",
        "grid": grid,
        "kernels": kernel_settings(grid),
        "resumed_from": {"cells_in_dataset": done} if done else None,
        "quarantined": [
            {"path": str(b.path), "moved_to": str(b.moved_to), "reason": b.reason} for b in scan.bad
        ],
        "previous_runs": ((previous or {}).get("previous_runs") or [])
        + ([_summary(previous)] if previous else []),
    }


def _log_outcome(stats: SweepStats, run_at: RunDir) -> None:
    if stats.stopped is not None:
        log.error(
            "stopped: %s; every result so far is in %s. Re-run the failed cells with "
            "retry=errors hydra.run.dir=%s, or the rest of the grid with the same command",
            stats.stopped,
            run_at.results,
            run_at.path,
        )
    if stats.grid.invalid:
        log.info(
            "dropped %d invalid combinations: %s",
            stats.grid.invalid,
            dict(stats.grid.invalid_by_field),
        )
    log.info(
        "%d cells run (%d failed), %d already there, %d duplicates, %d invalid, %d excluded -> %s",
        stats.ok + stats.failed,
        stats.failed,
        stats.resumed,
        stats.duplicates,
        stats.grid.invalid,
        stats.grid.excluded,
        run_at.results,
    )


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    keep = ("started_at", "finished_at", "status", "counts", "timings")
    return {k: manifest.get(k) for k in keep}


# A sweep that stopped at max_failures: what ran is kept, the rest did not run.
STOPPED_EXIT = 3

# Errors that are the user's to fix: one line naming the key / path / holder, exit 2.
USER_ERRORS = (ConfigError, GridError, ScenarioError, RunDirLocked, OutputError)


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        manifest = sweep(cfg, run_dir)
    except USER_ERRORS as err:
        log.error("%s", err)
        sys.exit(2)
    except OSError as err:  # e.g. the disk filled up mid-sweep
        log.error(
            "cannot write results: %s. Every file already in %s is whole; run the same "
            "command again (hydra.run.dir=%s) to resume",
            err,
            RunDir.at(run_dir, cfg.results_dir).results,
            run_dir,
        )
        sys.exit(2)
    if cfg.report:
        from sweep.report import cli as report_cli

        report_cli.main([str(run_dir)])
    if manifest["status"] == "stopped":
        sys.exit(STOPPED_EXIT)


def command_line(args: list[str]) -> list[str]:
    """The command line as Hydra gets it: ``inventory=FILE`` as
    ``inventory.path=FILE``, and for ``retry=errors`` the run's own overrides first."""
    return recorded_overrides([path_override(a) for a in args])


def main() -> None:
    """The ``zapsweep`` console script: unknown keys are named before Hydra composes."""
    sys.argv[1:] = args = command_line(sys.argv[1:])
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
