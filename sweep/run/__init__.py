"""Running a grid: config -> grid -> cells -> engine on Ray -> rows into the dataset.

- ``sweep(cfg, run_dir)``: the whole sweep the ``zapsweep`` command runs (``cli``);
- ``Grid``, ``GridCounts``, ``GridError``, ``expand``: the lazy, indexable grid;
- ``RunSettings``, ``Cell``, ``cell_id``, ``run_batch``, ``run_range``: cells and
  what a worker does with a range of the grid;
- ``RunPlan``, ``run``, ``SweepStats``: the driver's loop on a connected Ray;
- ``ray_session``, ``init_local_ray``: the Ray a sweep runs on;
- ``run_dir_lock``, ``RunDirLocked``: one sweep per run directory;
- ``check_config``, ``ConfigError``, ``OutputError``: what is refused before Ray starts.

Names are imported on first use: a worker running a range imports ``cells``
and the engine only, never the driver's Hydra, tqdm or Arrow datasets.
"""

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
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
