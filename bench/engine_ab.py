"""Engine A/B: the fast engine's normal path (``simulate``) in another source
tree and in this one, in turn, in one run: does a change slow it down?

For each scenario (16 TiB 4K guests under ``tick``, the cells where the tick
loop places the most yields), ``--rounds`` rounds; each round runs a fresh
subprocess per tree, pinned to one CPU, that warms up on a 2 MiB guest and
times three calls.  Prints the min and median per tree and the ratio of the
mins.  The other tree is any checkout (``git archive main | tar -x -C DIR``).

    python bench/engine_ab.py OTHER_TREE [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, os, sys, time
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from engine import Scenario, load_cost_model, simulate
cm = load_cost_model("seed-2022")
simulate(Scenario(guest_memory="2MiB"), "fast", cm)
s = Scenario(**json.loads(sys.argv[1]))
times = []
for _ in range(3):
    t = time.perf_counter()
    simulate(s, "fast", cm)
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""

SCENARIOS = {
    "5-level 4K per_level tick": {"paging_levels": 5, "zap_levels": "per_level"},
    "4-level 4K per_level tick": {"paging_levels": 4, "zap_levels": "per_level"},
    "5-level 4K two_pass tick": {"paging_levels": 5, "zap_levels": "two_pass"},
}
COMMON = {"guest_memory": "16TiB", "resched": "tick", "flush_on_yield": True, "dirty_ratio": 0.5}


def timed(tree: Path, scenario: dict) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    said = subprocess.check_output(
        [sys.executable, "-c", CHILD, json.dumps(scenario)], cwd=tree, env=env, text=True
    )
    return json.loads(said.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", type=Path, help="the other source tree (its engine/)")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    trees = {"other": args.other.resolve(), "this": Path(__file__).resolve().parents[1]}
    for name, fields in SCENARIOS.items():
        got: dict[str, list[float]] = {k: [] for k in trees}
        for _ in range(args.rounds):
            for k, tree in trees.items():
                got[k] += timed(tree, {**COMMON, **fields})
        a, b = got["other"], got["this"]
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"{name:27s} other min {min(a):.3f} s median {ma:.3f} s   "
            f"this min {min(b):.3f} s median {mb:.3f} s   "
            f"this/other {min(b) / min(a):.3f} (min), {mb / ma:.3f} (median)"
        )
    print(f"cpus visible: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
