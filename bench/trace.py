"""Trace benchmark: what a trace of one zap costs next to simulating it.

Prints, measured side by side in this one run, for a fully populated 16 TiB
4K guest (5-level, per_level, A=1, D=0.5, flush_on_yield, 416 vCPUs) under
``tick`` (1000 us) and ``always``, and for the seed's 4-level 16 TiB
``two_pass`` zap under ``tick``:

- ``simulate``: the ZapResult alone (the sweep's path);
- ``zap_events``: the events (the fast engine's logged walks, the longest
  operations) and their check against the result;
- ``trace``: the events drawn as trace-event JSON and written;
- the file's size (target < 20 MB) and the holds listed, aggregated and summarized.

Each scenario runs in a fresh subprocess pinned to one CPU, after a warm-up
on a 2 MiB guest; walls are the median of ``--repeat`` runs.

    python bench/trace.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, resource, sys, tempfile, time
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from engine import Scenario, simulate, zap_events
from sweep.trace import write_trace
kw, repeat = json.load(sys.stdin), int(sys.argv[1])
zap_events(Scenario(guest_memory="2MiB", resched=kw["resched"]))  # imports, compiled loops
s = Scenario(**kw)
out = {"simulate": [], "events": [], "trace": []}
for _ in range(repeat):
    t = time.perf_counter(); r = simulate(s); out["simulate"].append(time.perf_counter() - t)
    t = time.perf_counter(); ev = zap_events(s); ev.check()
    out["events"].append(time.perf_counter() - t)
    path = os.path.join(tempfile.mkdtemp(), "trace.json")
    t = time.perf_counter(); write_trace(ev, path); out["trace"].append(time.perf_counter() - t)
out["bytes"] = os.path.getsize(path)
out["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out["holds"] = ev.hold_count
out["listed"] = len(ev.holds)
out["summarized"] = sum(x.holds for x in ev.summarized)
print(json.dumps(out))
"""


def measure(kw: dict, repeat: int) -> dict:
    """One scenario in a fresh, pinned subprocess (the scenario on its stdin)."""
    child = [sys.executable, "-c", CHILD, str(repeat)]
    said = subprocess.check_output(child, input=json.dumps(kw), text=True)
    return json.loads(said.strip().splitlines()[-1])


def main() -> None:
    repeat = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repeat.add_argument("--repeat", type=int, default=3)
    runs = repeat.parse_args().repeat
    big = {"paging_levels": 5, "guest_memory": "16TiB", "zap_levels": "per_level"}
    big |= {"dirty_ratio": 0.5, "flush_on_yield": True, "vcpus": 416}  # page_size 4K, A=1
    cases = {
        "5-level 4K per_level tick": dict(big, resched="tick"),
        "5-level 4K per_level always": dict(big, resched="always"),
        "4-level 4K two_pass tick": dict(
            big, paging_levels=4, zap_levels="two_pass", resched="tick"
        ),
    }
    print("== 16 TiB, 4K fully populated, A=1 D=0.5, flush_on_yield, 416 vCPUs")
    worst = 0
    for name, kw in cases.items():
        m = measure(kw, runs)
        sim, ev, tr = (statistics.median(m[k]) for k in ("simulate", "events", "trace"))
        worst = max(worst, m["bytes"])
        print(
            f"{name:28s} simulate {sim:6.3f} s  events {ev:6.3f} s ({ev / sim:4.1f}x)  "
            f"json {tr:6.3f} s  file {m['bytes'] / 1e6:5.2f} MB  peak {m['peak'] / 2**30:4.2f} GiB"
            f"  holds {m['holds']:>13,} (listed {m['listed']:,}, summarized "
            f"{m['summarized']:,})"
        )
    print(f"largest file: {worst / 1e6:.2f} MB (target < 20 MB)")
    print(f"cpus visible: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
