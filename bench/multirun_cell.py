"""One cell of the bench grid as one Hydra job: the way ``--multirun`` sweeps.

    python bench/multirun_cell.py --multirun hydra/launcher=ray 'idx=range(0,200)'

Used by bench/sweep.py to time Hydra's multirun with the hydra-ray-launcher.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where bench/
# modules named like the packages (sweep.py, engine.py) would shadow them.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import hydra  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from engine import simulate  # noqa: E402
from sweep.run.grid import expand  # noqa: E402


@dataclass
class CellJob:
    idx: int = 0
    grid: str = "bench"


ConfigStore.instance().store(name="cell_job", node=CellJob)


@hydra.main(version_base="1.3", config_path=None, config_name="cell_job")
def main(cfg: CellJob) -> dict:
    from importlib import resources

    path = resources.files("conf") / "grid" / f"{cfg.grid}.yaml"
    grid = OmegaConf.to_container(OmegaConf.load(str(path)))
    grid.pop("defaults", None)
    scenario = next(itertools.islice(expand(grid), cfg.idx, None))
    return simulate(scenario, engine="fast").to_dict()


if __name__ == "__main__":
    main()
