"""``manifest.json``: what a run was asked, what it did, with which versions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


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


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def write_manifest(run_dir: Path, data: dict[str, Any]) -> Path:
    """Write atomically (temp file then rename), so a reader never sees half of it."""
    path = Path(run_dir) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path
