"""The run directory's layout: the one place that names its files and folders.

    <run_dir>/
      .hydra/                 the resolved config (Hydra's)
      .zapsweep.lock          held by the sweep writing here
      manifest.json           what the run was asked, did, with which versions
      <results>/              the dataset (``results_dir``, default ``results``):
        paging_levels=<n>/strategy=<s>/part-<uuid>.parquet
      .staging/               result files being written, beside <results>
      quarantine/             bad result files moved aside, beside <results>
      superseded/             result files whose error rows a retry replaced, beside <results>
      summary.parquet, vms.parquet, report.md, report.html, plots/   the report
      compare.md              the full table of a comparison with this run as B

``.staging/``, ``quarantine/`` and ``superseded/`` sit next to the dataset, not necessarily in
the run directory, so that a rename into or out of the dataset never crosses
a filesystem (it is atomic).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

# Hive partition columns, slowest first: directory names, not file columns.
PARTITION_COLUMNS = ("paging_levels", "strategy")
DEFAULT_RESULTS = "results"
STAGING = ".staging"
QUARANTINE = "quarantine"
SUPERSEDED = "superseded"
HYDRA = ".hydra"
MANIFEST = "manifest.json"
LOCK_FILE = ".zapsweep.lock"
# Names a results_dir may not take: the sweep's own folders.
RESERVED = (STAGING, QUARANTINE, SUPERSEDED, HYDRA)
RESULT_GLOB = "*.parquet"
KEPT_SUFFIX = "-kept.parquet"


class NotARun(FileNotFoundError):
    """A path given as a run that is none of: run directory, dataset, Parquet file."""

    def __init__(self, path: Path, runs: list[Path] = ()):
        held = ""
        if runs:
            shown = ", ".join(str(r) for r in runs[:RUNS_NAMED])
            more = f" and {len(runs) - RUNS_NAMED} more" if len(runs) > RUNS_NAMED else ""
            many = f"{len(runs)} runs" if len(runs) > 1 else "1 run"
            held = f" but a directory of {many} ({shown}{more}): give one of them"
        super().__init__(
            f"{path} is not a run{held}; allowed a run directory (with {MANIFEST} and "
            f"{DEFAULT_RESULTS}/), a results dataset directory or a {RESULT_GLOB} file"
        )


RUNS_NAMED = 3
# How deep runs are looked for under a directory that is none: outputs/<date>/<time>/.
RUNS_DEPTH = 3


@dataclass(frozen=True)
class RunDir:
    """A run directory and where its dataset lives."""

    path: Path
    results: Path
    report_to: Path | None = None  # the report's directory, when not the run directory

    @classmethod
    def at(cls, path: str | Path, results_dir: str | Path = DEFAULT_RESULTS) -> RunDir:
        """The run directory ``path`` with its dataset at ``results_dir`` (relative to it)."""
        path = Path(path)
        return cls(path, path / results_dir)

    @classmethod
    def find(cls, path: str | Path) -> RunDir:
        """The run a reader names: a run directory (its manifest says where the
        dataset is, by default ``results/``) or a dataset directory itself."""
        path = Path(path)
        recorded = _recorded_results(path)
        if recorded is not None and recorded.is_dir():
            return cls(path, recorded)
        if (path / DEFAULT_RESULTS).is_dir():
            return cls.at(path)
        if not path.exists():
            raise FileNotFoundError(f"no run directory or results dataset at {path}")
        if path.is_file() and not path.match(RESULT_GLOB):
            raise NotARun(path)
        if path.is_dir() and (runs := runs_under(path)):
            raise NotARun(path, runs)  # outputs/ itself: the report would mix runs
        return cls(path.parent, path)  # a dataset (or one file) named directly

    # The sweep's own files -------------------------------------------------------

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def hydra_config(self) -> Path:
        """The run's resolved config, as Hydra (or ``sweep.run(...)``) saved it."""
        return self.path / HYDRA / "config.yaml"

    @property
    def hydra_overrides(self) -> Path:
        """The overrides the run was started with, as Hydra saved them."""
        return self.path / HYDRA / "overrides.yaml"

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def staging(self) -> Path:
        return self.results.parent / STAGING

    @property
    def quarantine(self) -> Path:
        return self.results.parent / QUARANTINE

    @property
    def superseded(self) -> Path:
        return self.results.parent / SUPERSEDED

    # The dataset ------------------------------------------------------------------

    def partition(self, paging_levels: int, strategy: str) -> Path:
        """The folder of one hive partition."""
        return self.results / f"paging_levels={paging_levels}" / f"strategy={strategy}"

    def result_files(self) -> list[Path]:
        """Every result file of the dataset (one file, if the dataset is a file)."""
        if self.results.is_file():
            return [self.results]
        if not self.results.is_dir():
            return []
        return sorted(self.results.rglob(RESULT_GLOB))

    def quarantined(self, path: Path) -> Path:
        """Where a bad file of the dataset goes: the same relative path in quarantine/."""
        return self.quarantine / path.relative_to(self.results)

    def superseded_file(self, path: Path) -> Path:
        """Where a file whose error rows were retried goes: its relative path in superseded/."""
        return self.superseded / path.relative_to(self.results)

    @staticmethod
    def kept_rows(path: Path) -> Path:
        """The file that holds, in results/, the rows of ``path`` a retry kept."""
        return path.with_name(f"{path.stem}{KEPT_SUFFIX}")

    @staticmethod
    def kept_from(path: Path) -> Path | None:
        """The file a file of kept rows came from (None for any other file)."""
        if not path.name.endswith(KEPT_SUFFIX):
            return None
        return path.with_name(path.name.removesuffix(KEPT_SUFFIX) + ".parquet")

    # The report ---------------------------------------------------------------------

    @property
    def report_dir(self) -> Path:
        """Where the report goes: the run directory, or next to a dataset named
        alone, unless ``report_to`` says otherwise."""
        return self.report_to or self.path

    @property
    def summary(self) -> Path:
        return self.report_dir / "summary.parquet"

    @property
    def vms(self) -> Path:
        """Per VM of a fleet inventory, its verdicts (the report's VMs section)."""
        return self.report_dir / "vms.parquet"

    @property
    def report_md(self) -> Path:
        return self.report_dir / "report.md"

    @property
    def report_html(self) -> Path:
        return self.report_dir / "report.html"

    @property
    def plots(self) -> Path:
        return self.report_dir / "plots"

    @property
    def compare_md(self) -> Path:
        """The full table of ``zapsweep-report --compare A B``, in B's report directory."""
        return self.report_dir / "compare.md"

    def report_files(self) -> list[Path]:
        """The report's files that exist now (what writing a report replaces)."""
        files = (self.summary, self.vms, self.report_md, self.report_html)
        return [p for p in files if p.exists()]


def runs_under(path: Path) -> list[Path]:
    """The run directories (those with a manifest) at most RUNS_DEPTH levels
    below ``path``, sorted."""
    found = []
    for depth in range(1, RUNS_DEPTH + 1):
        found += [m.parent for m in path.glob("/".join(["*"] * depth + [MANIFEST]))]
    return sorted(found)


def new_file_name() -> str:
    """A result file's name, unique across drivers and workers."""
    return f"part-{uuid.uuid4().hex}.parquet"


def _recorded_results(path: Path) -> Path | None:
    """The dataset folder a run directory's manifest records (as configured:
    relative to the run directory, or absolute), if any."""
    try:
        recorded = json.loads((path / MANIFEST).read_text()).get("results_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return path / recorded if isinstance(recorded, str) and recorded else None


def fsync_dir(path: Path) -> None:
    """Make the entries of ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
