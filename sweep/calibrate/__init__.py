"""Calibrating a cost model to measured root zaps.

- ``read_table``, ``parse_measurements``, ``Measurement``, ``CalibrationError``
  (``measurements``): reading the measured zaps;
- ``observations``, ``fit_costs``, ``calibrate``, ``CostFit`` (``fit``): the fit;
- ``render_yaml``, ``summary`` (``output``): the model's YAML, the fit's summary;
- ``main``: the ``zapsweep-calibrate`` command (``cli``).
"""

from .cli import main
from .fit import CostFit, Observation, calibrate, fit_costs, observations
from .measurements import CalibrationError, Measurement, parse_measurements, read_table
from .output import render_yaml, summary

__all__ = [
    "CalibrationError",
    "CostFit",
    "Measurement",
    "Observation",
    "calibrate",
    "fit_costs",
    "main",
    "observations",
    "parse_measurements",
    "read_table",
    "render_yaml",
    "summary",
]
