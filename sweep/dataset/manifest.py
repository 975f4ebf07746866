"""``manifest.json`` and provenance: what a run was asked, what it did, with which versions.

Provenance is built once per run (``Provenance.of``) and written to both places
that carry it: the manifest (``as_dict``) and every result file's key-value
metadata (``file_metadata``, keys prefixed ``zapsweep.``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .layout import RunDir

METADATA_PREFIX = "zapsweep."


def git_revision(path: Path | None = None) -> str | None:
    """The source tree's commit (with ``-dirty``), or None outside a git checkout."""
    where = path or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev or None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("zapsweep", "ray", "pyarrow", "hydra-core", "polars"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


@dataclass(frozen=True)
class Provenance:
    """What made a run's rows, besides its grid."""

    run_dir: str
    engine: str
    engine_version: str
    cost_model: dict[str, Any]  # name and version
    git_revision: str | None
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, run: RunDir, engine: str, engine_version: str, cost_model: Any) -> Provenance:
        """This process's provenance for a run of ``engine`` under ``cost_model``."""
        model = {"name": cost_model.name, "version": cost_model.version}
        return cls(str(run.path), engine, engine_version, model, git_revision(), versions())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def file_metadata(self) -> dict[str, Any]:
        """The same fields for a result file's metadata: ``zapsweep.<field>``."""
        return {METADATA_PREFIX + k: "" if v is None else v for k, v in self.as_dict().items()}


def read_manifest(run: RunDir) -> dict[str, Any] | None:
    """The run's manifest; None when there is none, or it does not parse."""
    try:
        data = json.loads(run.manifest.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(run: RunDir, data: dict[str, Any]) -> Path:
    """Write atomically (temp file, fsync, rename), so a reader never sees half of it."""
    path = run.manifest
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
