"""The processes a test started, found under its pid in /proc."""

from __future__ import annotations

from pathlib import Path


def descendants(pid: int) -> dict[int, str]:
    """pid -> start time of every live process under ``pid``."""
    parent, started = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            parent[int(stat.parent.name)], started[int(stat.parent.name)] = (
                int(fields[1]),
                fields[19],
            )
    out, todo = {}, [p for p, pp in parent.items() if pp == pid]
    while todo:
        p = todo.pop()
        out[p] = started[p]
        todo += [c for c, pp in parent.items() if pp == p]
    return out
