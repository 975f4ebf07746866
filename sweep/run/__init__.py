"""Running a grid: config -> grid -> cells -> engine on Ray -> rows into the dataset.

``sweep.run(grid="smoke", overrides=[...], run_dir=None, ray_address=None)``
(this package, called) runs a sweep from Python and returns a
``SweepResult`` (``notebook``).

- ``sweep(cfg, run_dir)``: the whole sweep the ``zapsweep`` command runs (``cli``);
- ``Grid``, ``GridCounts``, ``GridError``, ``expand``: the lazy, indexable grid;
- ``RunSettings``, ``Cell``, ``cell_id``, ``run_batch``, ``run_range``: cells and
  what a worker does with a range of the grid;
- ``RunPlan``, ``run``, ``SweepStats``: the driver's loop on a connected Ray;
- ``ray_session``, ``init_local_ray``: the Ray a sweep runs on;
- ``run_dir_lock``, ``RunDirLocked``: one sweep per run directory;
- ``check_config``, ``ConfigError``, ``InventoryError``, ``OutputError``: what is
  refused before Ray starts;
- ``Inventory``: a fleet inventory's rows, one axis of the grid;
- ``run_sweep``, ``SweepResult``: a sweep from Python.

Names are imported on first use: a worker running a range imports ``cells``
and the engine only, never the driver's Hydra, tqdm or Arrow datasets.
"""

import sys
import types

from sweep.faces import lazy_face

_EXPORTS = {
    "sweep": "cli",
    "USER_ERRORS": "cli",
    "Grid": "grid",
    "GridCounts": "grid",
    "GridError": "grid",
    "expand": "grid",
    "RunSettings": "cells",
    "Cell": "cells",
    "cell_id": "cells",
    "make_cell": "cells",
    "run_batch": "cells",
    "run_range": "cells",
    "RunPlan": "runner",
    "SweepStats": "runner",
    "run": "runner",
    "ray_session": "session",
    "init_local_ray": "session",
    "run_dir_lock": "lock",
    "RunDirLocked": "lock",
    "check_config": "validate",
    "ConfigError": "validate",
    "OutputError": "validate",
    "InventoryError": "validate",
    "Inventory": "inventory",
    "run_sweep": "notebook",
    "SweepResult": "notebook",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)


class RunPackage(types.ModuleType):
    """This package, callable: ``sweep.run(...)`` is ``run_sweep(...)``."""

    def __call__(self, *args, **kwargs):
        from .notebook import run_sweep

        return run_sweep(*args, **kwargs)


sys.modules[__name__].__class__ = RunPackage
