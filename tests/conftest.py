"""Shared fixtures.

``ray_local``: one embedded Ray for the whole session (2 CPUs at most,
loopback, no dashboard), shut down at the end.  ``address="local"`` makes
sure it never joins a cluster some other process started on this machine.
"""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(scope="session")
def ray_local():
    if ray.is_initialized():
        yield ray
        return
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
