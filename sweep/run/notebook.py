"""A sweep from Python (a notebook, a script): ``sweep.run(grid=..., overrides=...)``.

The same config (composed by Hydra from conf/, with the same overrides as on
the command line), the same checks before Ray starts, the same run directory
(``.hydra/`` included, so ``zapsweep ... hydra.run.dir=RUN`` resumes or
retries it) and the same Parquet as ``zapsweep``.  Errors are raised, not
printed: ConfigError, InventoryError, GridError, ScenarioError,
RunDirLocked, OutputError.  A Ray session the caller already started is
used as it is and left running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from omegaconf import DictConfig, OmegaConf

from sweep.dataset import RunDir

DEFAULT_OUTPUTS = Path("outputs")


@dataclass(frozen=True)
class SweepResult:
    """What a sweep from Python returns: where it went, its rows, its verdicts."""

    run_dir: Path
    manifest: dict[str, Any]
    frame: pl.DataFrame  # every row of the run's dataset, errors included
    verdicts: pl.DataFrame  # per paging depth, page size and strategy (sweep.report.verdicts)
    report: dict[str, Path] | None  # the report's files, when it was written

    @property
    def status(self) -> str:
        """complete, or stopped (max_failures)."""
        return self.manifest["status"]

    @property
    def errors(self) -> pl.DataFrame:
        return self.frame.filter(pl.col("status") != "ok")

    def __repr__(self) -> str:
        counts = self.manifest.get("counts", {})
        return (
            f"SweepResult({self.status}: {self.frame.height} rows in {self.run_dir}, "
            f"{counts.get('submitted', 0)} run now, {counts.get('failed', 0)} failed)"
        )


def default_run_dir() -> Path:
    """Where Hydra would put the run: outputs/<date>/<time>."""
    return DEFAULT_OUTPUTS / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")


def save_config(run: RunDir, cfg: DictConfig, overrides: Sequence[str]) -> None:
    """What Hydra saves in .hydra/: the resolved config and the overrides."""
    run.hydra_config.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run.hydra_config, resolve=True)
    run.hydra_overrides.write_text(yaml.safe_dump(list(overrides), default_flow_style=False))


def run_sweep(
    grid: str = "seed",
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
    ray_address: str | None = None,
) -> SweepResult:
    """Run the grid ``grid`` (conf/grid/<grid>.yaml) with Hydra ``overrides``
    into ``run_dir`` (default outputs/<date>/<time>; an existing run
    directory resumes, with ``retry=errors`` retries its failed cells), on the
    Ray session already started, else on ``ray_address`` (or RAY_ADDRESS),
    else on an embedded local Ray.  Writes the report unless
    ``report=false``; returns the rows and the verdicts."""
    from sweep.report import verdicts, write_report
    from sweep.report.summary import open_results

    from .cli import command_line, prepare, sweep
    from .compose import job_config
    from .lock import check_free

    args = [f"grid={grid}", *overrides]
    if ray_address is not None:
        args.append(f"ray.address={ray_address}")
    where = Path(run_dir) if run_dir is not None else default_run_dir()
    args = command_line([*args, f"hydra.run.dir={where}"])
    args = [a for a in args if not a.startswith("hydra.")]
    cfg, _ = job_config(args)  # Hydra's errors as ConfigError, as on the command line
    prepare(cfg)  # refused before anything is written, as on the command line
    check_free(where)
    run = RunDir.at(where, cfg.results_dir)
    save_config(run, cfg, args)
    manifest = sweep(cfg, where)
    written = write_report(where) if cfg.report else None
    results = open_results(where)
    frame = results.scan().collect() if results.files else pl.DataFrame()
    judged = verdicts(results) if results.files else pl.DataFrame()
    return SweepResult(where, manifest, frame, judged, written)


__all__ = ["SweepResult", "run_sweep"]
