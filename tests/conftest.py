"""Shared fixtures.

``ray_local``: one embedded Ray for the whole session (2 CPUs at most,
loopback only, no dashboard), shut down at the end.  It never joins a cluster
some other process started on this machine.  Under pytest-xdist each worker
is a session of its own, with a Ray of its own.

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


def pytest_collection_modifyitems(items):
    """Longest first, so that the workers end together: the slow tests (whole
    sweeps, subprocesses, clusters), then the hypothesis tests, then the rest,
    each kind in file order (the same order in every worker, as xdist needs)."""

    def kind(item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if getattr(getattr(item, "obj", None), "is_hypothesis_test", False) else 2

    items.sort(key=kind)


# Modules whose tests share an expensive module-scoped fixture (a sweep, a
# corpus of command lines run in subprocesses): under pytest-xdist all of such
# a module's tests go to one worker, which builds the fixture once.  Every
# other test is scheduled on its own, to whichever worker is free.
SHARED_FIXTURE_MODULES = {
    "test_bad_config.py",
    "test_console_errors.py",
    "test_report_output.py",
    "test_report_summary.py",
    "test_retry.py",
    "test_sweep.py",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module.rsplit("/", 1)[-1] in SHARED_FIXTURE_MODULES else nodeid

    return Scheduling(config, log)
