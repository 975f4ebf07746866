"""Shared fixtures.

``ray_local``: one embedded Ray for the whole session (2 CPUs at most,
loopback only, no dashboard), shut down at the end.  It never joins a cluster
some other process started on this machine.

The config schemas are registered once, as the zapsweep command does, so that
any test composes ``conf/config.yaml`` whatever ran before it.
"""

from __future__ import annotations

import pytest
import ray

from sweep.run.config import register_configs
from sweep.run.session import init_local_ray

register_configs()


@pytest.fixture(scope="session")
def ray_local():
    if ray.is_initialized():
        yield ray
        return
    init_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()
