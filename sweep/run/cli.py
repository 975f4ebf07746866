"""``zapsweep``: the sweep as a Hydra app.

zapsweep                                   # the seed grid, local Ray
zapsweep grid=smoke engine=reference
zapsweep grid.vcpus=[1,64] grid.dirty_ratio=[0,1]
zapsweep ray.address=auto                  # an existing cluster
zapsweep hydra.run.dir=outputs/2026-01-01/12-00-00   # resume that run

Before Hydra creates the run directory, ``main`` composes the config itself
and checks every setting, the grid and the run directory, so a refused
command line is one line and exit 2 and leaves nothing behind.  It then pins
the run directory on the command line it hands Hydra, so that the directory
checked is the one used, and a resume command can name it.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import shlex
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from .cluster import ClusterUnreachable
from .grid import Grid, GridError
from .inventory import Inventory, path_override, read_inventory
from .lock import RunDirLocked, check_free, run_dir_lock
from .progress import Progress
from .retry import prepare_retry, recorded_overrides
from .stop import Stopped, StopSignals, exit_code, signal_name
from .validate import (
    ConfigError,
    OutputError,
    check_config,
    check_run_dir,
    check_settings,
    missing_parents,
    probe_output,
)

log = logging.getLogger("zapsweep")

PROG = "zapsweep"
USER_ERROR_EXIT = 2


def prepare(cfg: DictConfig) -> tuple[RunSettings, Grid | None, Inventory | None]:
    """Every check of the settings, the inventory and the grid; what the
    sweep runs.  Raises ConfigError (InventoryError), GridError or
    ScenarioError naming the key, or the row and column, and what is allowed.
    A retry runs the failed rows, not the grid: its grid (None) comes from the
    run directory."""
    config = OmegaConf.to_container(cfg, resolve=True)
    inventory = grid = None
    if config["retry"] is not None:
        check_settings(config)
    else:
        inventory = read_inventory(config["inventory"]["path"])
        rows = inventory.axis() if inventory else None
        check_config(config, rows)
        grid = Grid.of(config["grid"], rows)
        _ = grid.twins  # the grid's one look at itself (duplicates), before Ray starts
    model = load_cost_model(config["cost_model"])
    return RunSettings(engine=cfg.engine, cost_model=model), grid, inventory


def sweep(cfg: DictConfig, run_dir: Path, command: str | None = None) -> dict[str, Any]:
    """Run the sweep ``cfg`` describes into ``run_dir``; return the manifest.

    Before Ray starts: every setting, grid value and inventory row is checked
    (ConfigError, InventoryError, GridError, ScenarioError name the key, or
    the row and column), the run directory is locked (RunDirLocked names the
    holder), and a probe is written where results go (OutputError).  Bad
    files in results/ are quarantined and their cells rerun.  With
    ``retry=errors`` the run's failed cells run again, and nothing else.  A
    cluster that does not answer raises ClusterUnreachable.

    SIGINT or SIGTERM stops it: the manifest then says ``"status":
    "interrupted"`` (``"failed"`` if it raised) and records ``command``, the
    command that resumes it (by default ``resume_command(run_dir)``).
    """
    started = time.monotonic()
    settings, grid, inventory = prepare(cfg)
    run_at = RunDir.at(run_dir, cfg.results_dir)
    with StopSignals() as stop, run_dir_lock(run_dir):
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
        from .runner import RunPlan  # Ray is imported only by a sweep that will run

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
        command = command or resume_command(run_dir)
        return _run(cfg, run_at, plan, scan, started, stop, command, extra)


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
    cfg, run_at: RunDir, plan, scan: Scan, started: float, stop, command: str, extra: dict
) -> dict:
    """Join or start Ray (a grid without cells, a retry with nothing failed,
    needs none), write the manifest, run the plan, write the manifest again
    with what happened (complete, stopped at max_failures, interrupted or
    failed)."""
    from .runner import SweepStats, run
    from .session import ray_session

    provenance = Provenance.of(
        run_at, plan.settings.engine, ENGINE_VERSION, plan.settings.cost_model
    )
    writer = ResultWriter(run_at, provenance.file_metadata())
    log.info(
        "grid: %d combinations; %d cells already in %s",
        plan.grid.size,
        len(plan.done),
        run_at.results,
    )
    manifest: dict[str, Any] = {}
    stats = SweepStats()
    with ray_session(cfg.ray, stop) if plan.grid.size else contextlib.nullcontext():
        stop.check()  # a signal while Ray warmed up: stop now that Ray's calls returned
        ray_ready = time.monotonic()
        manifest = {
            **_manifest_at_start(
                cfg, run_at, provenance, scan, len(plan.done), command, plan.grid.size
            ),
            **extra,
        }
        write_manifest(run_at, manifest)
        cpu_at_start = time.process_time()
        progress = Progress(
            plan.grid.size, cfg.progress.bar, cfg.progress.log_interval_s, len(plan.done)
        )
        try:
            with stop.deferred():
                stats = run(plan, writer, progress, stop.requested)
            if stop.requested():
                status = "interrupted"
            else:
                status = "complete" if stats.stopped is None else "stopped"
            progress.close(quiet=stop.requested())  # the interrupted line says it all
        except BaseException as err:
            _record_failure(run_at, manifest, writer, err, stop, len(plan.done))
            raise
        # CPU the driver itself spent handing out ranges and writing: when it
        # nears sweep_s, the driver (not the workers) limits the sweep.
        driver_cpu_s = time.process_time() - cpu_at_start
        writer.close()
        manifest.update(
            status=status,
            stopped_because=stats.stopped,
            finished_at=_now(),
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
        if stop.requested():
            manifest["stopped_by"] = signal_name(stop.received)
        write_manifest(run_at, manifest)
    if status != "interrupted":
        _log_outcome(stats, run_at)
    return manifest


def _record_failure(
    run_at: RunDir, manifest: dict, writer, err: BaseException, stop, done: int
) -> None:
    """The sweep raised: what is placed stays; the manifest says why it ended."""
    try:
        writer.close()
    except OSError:
        pass
    interrupted = isinstance(err, (KeyboardInterrupt, Stopped)) or stop.requested()
    manifest.update(
        status="interrupted" if interrupted else "failed",
        finished_at=_now(),
        error=None if interrupted else f"{type(err).__name__}: {err}",
        counts={"rows_in_dataset": done + writer.rows, "submitted": writer.rows},
    )
    try:
        write_manifest(run_at, manifest)
    except OSError:
        pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def kernel_settings(grid: dict[str, Any]) -> dict[str, Any]:
    """The resolved settings of every kernel preset the grid names, per trigger."""
    names = grid.get("kernel") or []
    names = names if isinstance(names, list) else [names]
    return {name: kernel_preset(name).to_dict() for name in dict.fromkeys(names) if name}


def _manifest_at_start(
    cfg: DictConfig,
    run_at: RunDir,
    provenance: Provenance,
    scan: Scan,
    done: int,
    command: str,
    grid_size: int,
) -> dict[str, Any]:
    previous = read_manifest(run_at)
    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    return {
        **provenance.as_dict(),
        "results_dir": cfg.results_dir,
        "started_at": _now(),
        "status": "running",
        "command": command,
        "grid_combinations": grid_size,
        "grid": grid,
        "kernels": kernel_settings(grid),
        "resumed_from": {"cells_in_dataset": done} if done else None,
        "quarantined": [
            {"path": str(b.path), "moved_to": str(b.moved_to), "reason": b.reason} for b in scan.bad
        ],
        "previous_runs": ((previous or {}).get("previous_runs") or [])
        + ([_summary(previous)] if previous else []),
    }


def _log_outcome(stats, run_at: RunDir) -> None:
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


def resume_command(run_dir: Path, overrides: list[str] | None = None) -> str:
    """The command that resumes ``run_dir``: this run's overrides (Hydra's record
    of the command line, when there is one) and the run directory."""
    if overrides is None:
        try:
            from hydra.core.hydra_config import HydraConfig

            overrides = list(HydraConfig.get().overrides.task)
        except (ImportError, ValueError):
            overrides = []
    keep = [o for o in overrides if not o.startswith("hydra.run.dir=")]
    return shlex.join([PROG, *keep, f"hydra.run.dir={run_dir}"])


def interrupted_line(manifest: dict[str, Any]) -> str:
    counts = manifest.get("counts") or {}
    saved = counts.get("rows_in_dataset", 0)
    this_run = counts.get("submitted")
    run_text = f", {this_run} of them by this run" if this_run is not None else ""
    return (
        f"interrupted ({manifest.get('stopped_by', 'signal')}): {saved} cells saved in "
        f"{manifest.get('run_dir')}{run_text}; resume with: {manifest.get('command')}"
    )


# A sweep that stopped at max_failures: what ran is kept, the rest did not run.
STOPPED_EXIT = 3

# Errors that are the user's to fix: one line naming the key / path / holder, exit 2.
USER_ERRORS = (
    ConfigError,
    GridError,
    ScenarioError,
    RunDirLocked,
    OutputError,
    ClusterUnreachable,
)


def remove_created(created: list[Path], run_dir: Path) -> bool:
    """Remove the run directory this command created (Hydra's config and log in
    it), and the parents it created, if no result file is in it; say if it did."""
    if not created or not run_dir.is_dir() or any(run_dir.rglob("*.parquet")):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    for p in created[1:]:  # the parents, deepest first; one that is not empty stays
        try:
            p.rmdir()
        except OSError:
            break
    return True


def _stopped_before_any_cell(
    created: list[Path], run_dir: Path, signame: str, command: str | None
) -> None:
    """The one line of a sweep stopped before it saved a cell: the run directory
    this command made is removed; one that was there stays, to resume."""
    if remove_created(created, run_dir):
        log.warning("interrupted (%s) before any cell was saved; nothing left behind", signame)
    else:
        log.warning(
            "interrupted (%s) before any new cell was saved; resume with: %s",
            signame,
            command or resume_command(run_dir),
        )


def _task(cfg: DictConfig, created: list[Path], command: str | None) -> None:
    """What the Hydra app does with the composed config."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        manifest = sweep(cfg, run_dir, command)
    except USER_ERRORS as err:
        remove_created(created, run_dir)
        log.error("%s", err)
        sys.exit(USER_ERROR_EXIT)
    except Stopped as err:  # before the loop ran
        _stopped_before_any_cell(created, run_dir, signal_name(err.signum), command)
        sys.exit(exit_code(err.signum))
    except KeyboardInterrupt:
        log.warning("interrupted again: stopped at once; resume with: %s", command)
        sys.exit(exit_code(signal.SIGINT))
    except OSError as err:  # e.g. the disk filled up mid-sweep
        log.error(
            "cannot write results: %s. Every file already in %s is whole; run the same "
            "command again (hydra.run.dir=%s) to resume",
            err,
            RunDir.at(run_dir, cfg.results_dir).results,
            run_dir,
        )
        sys.exit(USER_ERROR_EXIT)
    if manifest["status"] == "interrupted":
        stopped_by = manifest.get("stopped_by", "SIGINT")
        if manifest["counts"]["rows_in_dataset"] == 0 and created:
            _stopped_before_any_cell(created, run_dir, stopped_by, command)
        else:
            log.warning("%s", interrupted_line(manifest))
        sys.exit(exit_code(signal.Signals[stopped_by]))
    if cfg.report:
        from sweep.report import cli as report_cli

        try:
            report_cli.main([str(run_dir)])
        except KeyboardInterrupt:
            log.warning(
                "interrupted while writing the report; every cell is saved in %s; "
                "write the report with: zapsweep-report %s",
                run_dir,
                shlex.quote(str(run_dir)),
            )
            sys.exit(exit_code(signal.SIGINT))
    if manifest["status"] == "stopped":
        sys.exit(STOPPED_EXIT)


# Hydra's own flags: with one of these the command line goes to Hydra as it is.
HYDRA_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info", "-m", "--multirun",
               "--version", "--shell-completion", "-sc", "-cd", "--config-dir", "-cp",
               "--config-path", "-cn", "--config-name", "-p", "--package", "--resolve",
               "--run", "-r", "--experimental-rerun")  # fmt: skip


def _hydra_value(text: str) -> str:
    """``text`` as one value of Hydra's override grammar."""
    if text and all(c.isalnum() or c in "/._-:" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_command_line(args: list[str]) -> tuple[list[str], Path]:
    """Everything ``zapsweep ARGS`` would refuse, refused now; returns the
    command line for Hydra (the run directory pinned) and that directory."""
    from .compose import job_config

    cfg, run_dir = job_config(args)
    prepare(cfg)
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args = [*args, f"hydra.run.dir={_hydra_value(str(run_dir))}"]
    check_free(run_dir)
    check_run_dir(run_dir)
    return args, run_dir


def _hydra_app(created: list[Path], command: str | None):
    import hydra

    from .config import register_configs, register_help

    register_configs()
    register_help()

    @hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
    def app(cfg: DictConfig) -> None:
        _task(cfg, created, command)

    return app


def command_line(args: list[str]) -> list[str]:
    """The command line as Hydra gets it: ``inventory=FILE`` as
    ``inventory.path=FILE``, and for ``retry=errors`` the run's own overrides first."""
    return recorded_overrides([path_override(a) for a in args])


def main() -> None:
    """The ``zapsweep`` console script."""
    sys.argv[1:] = args = command_line(sys.argv[1:])
    if any(a.split("=", 1)[0] in HYDRA_FLAGS for a in args):
        _hydra_app([], None)()
        return
    try:
        args, run_dir = check_command_line(args)
    except (ConfigError, GridError, ScenarioError, RunDirLocked) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted before it started; nothing written", file=sys.stderr)
        sys.exit(exit_code(signal.SIGINT))
    created = missing_parents(run_dir.absolute())
    sys.argv = [sys.argv[0], *args]
    try:
        _hydra_app(created, resume_command(run_dir, args))()
    except KeyboardInterrupt:  # while Hydra composed, before the sweep caught signals
        remove_created(created, run_dir)
        print(f"{PROG}: interrupted before it started; nothing written", file=sys.stderr)
        sys.exit(exit_code(signal.SIGINT))


if __name__ == "__main__":
    main()
