"""Shared fixtures.

``ray_local``: one embedded Ray for the whole session (2 CPUs at most,
loopback only, no dashboard), shut down at the end.  It never joins a cluster
some other process started on this machine.
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
