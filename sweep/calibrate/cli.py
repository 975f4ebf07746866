"""``zapsweep-calibrate``: fit a cost model to measured root zaps, write it as YAML.

zapsweep-calibrate MEASUREMENTS [--name NAME] [--out DIR] [--base MODEL]
[--engine fast|reference] [--max-rel-se 0.2] [--force]

The model goes to ``conf/cost_model/<name>.yaml`` (the ``cost_model`` config
group of ``zapsweep``) unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import re
from importlib import resources
from pathlib import Path

import yaml

from engine import DEFAULT_ENGINE, ScenarioError, load_cost_model
from sweep.console import OneLineParser, positive_float, user_error

from .fit import DEFAULT_MAX_REL_SE, calibrate
from .measurements import CalibrationError, parse_measurements, read_table
from .output import render_yaml, summary

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def cost_model_dir() -> Path:
    """``zapsweep``'s cost_model config group: where ``cost_model=<name>`` finds a model."""
    return Path(str(resources.files("conf") / "cost_model"))


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="zapsweep-calibrate",
        description="Fit a zapsweep cost model to measured root zaps (CSV or Parquet).",
    )
    p.add_argument("measurements", help="CSV/Parquet file, or a directory of Parquet files")
    p.add_argument("--name", help="name of the new cost model (default: calibrated-<file stem>)")
    p.add_argument("--out", help="directory to write <name>.yaml (default: conf/cost_model/)")
    p.add_argument("--base", default="seed-2022", help="model for undetermined costs")
    p.add_argument("--engine", default=DEFAULT_ENGINE, choices=("fast", "reference"))
    p.add_argument(
        "--max-rel-se",
        type=positive_float,
        default=DEFAULT_MAX_REL_SE,
        help="costs fitted with a larger relative standard error are undetermined",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing model")
    return p


def run(args: argparse.Namespace) -> Path:
    source = args.measurements
    name = args.name or f"calibrated-{Path(source).stem}"
    if not _NAME_RE.match(name):
        raise CalibrationError(f"--name {name!r}: use letters, digits, '.', '_' or '-'")
    try:
        base = load_cost_model(args.base)
    except ScenarioError as e:
        raise CalibrationError(f"--base: {e}") from e
    out_dir = Path(args.out) if args.out else cost_model_dir()
    path = out_dir / f"{name}.yaml"
    version = 1
    if path.exists():
        if not args.force:
            raise CalibrationError(f"{path} exists: choose another --name or pass --force")
        try:
            version = load_cost_model(path).version + 1
        except ScenarioError:
            version = 1
    measurements = parse_measurements(read_table(source), source)
    fit, rounds = calibrate(measurements, base, args.engine, args.max_rel_se)
    text = render_yaml(
        fit,
        name=name,
        version=version,
        source=str(source),
        base=base,
        engine=args.engine,
        rounds=rounds,
        measurements=measurements,
    )
    load_cost_model(yaml.safe_load(text))  # the engine must accept what we write
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise CalibrationError(
            f"--out {out_dir}: cannot write {path} ({e.strerror or e}); allowed a writable "
            "directory"
        ) from None
    print(summary(fit, base))
    print(f"wrote {path} (cost_model={name}, version {version})")
    return path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        run(args)
    except CalibrationError as e:
        return user_error("zapsweep-calibrate", str(e))
    return 0
