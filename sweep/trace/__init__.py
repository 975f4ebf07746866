"""One zap as a Chrome trace: ``engine.zap_events`` drawn as trace-event JSON.

- ``trace_json``, ``write_trace``: the trace of a ``ZapEvents`` (``chrome``);
- ``find_cell``: the scenario, engine and costs of a cell of a run (``cell``);
- ``main``: the ``zapsweep-trace`` command (``cli``).
"""

from .cell import CellNotFound, find_cell
from .chrome import trace_json, write_trace
from .cli import main

__all__ = ["CellNotFound", "find_cell", "main", "trace_json", "write_trace"]
