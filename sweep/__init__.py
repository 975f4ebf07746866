"""zapsweep's pipeline, one package per stage, the data flowing one way:

- ``sweep.run``: config -> grid -> cells -> the engine on Ray workers -> rows;
- ``sweep.dataset``: rows -> the run directory's Parquet dataset (staged,
  fsynced, checked), its manifest and provenance;
- ``sweep.report``: the dataset -> summary, verdicts, plots, report;
- ``sweep.calibrate``: measured zaps -> a fitted cost model;
- ``sweep.trace``: one zap's events -> a Chrome trace (``zapsweep-trace``).

``sweep.run(grid=..., overrides=[...])`` runs a sweep from Python.
"""

from . import run

__all__ = ["run"]
