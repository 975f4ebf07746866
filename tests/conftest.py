"""Shared fixtures.

``ray_local``: one embedded Ray for the whole session (2 CPUs at most,
loopback only, no dashboard), shut down at the end.  It never joins a cluster
some other process started on this machine.  Under pytest-xdist each worker
is a session of its own, with a Ray of its own.
"""

from __future__ import annotations

import pytest
import ray

from sweep.run.session import init_local_ray


@pytest.fixture(scope="session")
def ray_local():
    if ray.is_initialized():
        yield ray
        return
    init_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items):
    """Longest first, so that the workers end together: the slow tests (whole
    sweeps, subprocesses, clusters), then the hypothesis tests, then the rest,
    each kind in file order (the same order in every worker, as xdist needs)."""

    def kind(item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if getattr(getattr(item, "obj", None), "is_hypothesis_test", False) else 2

    items.sort(key=kind)
