"""The Ray session a sweep runs in: an embedded local Ray, or an existing cluster.

The local Ray listens on loopback only and serves no dashboard; a killed
driver takes it along (``Reaper``).  A cluster gets this code through a
runtime environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import ray

from .cluster import join_cluster
from .config import RayConfig
from .reaper import Reaper

log = logging.getLogger(__name__)


def runtime_env() -> dict:
    """Ship this code to a cluster's workers: the engine, the pipeline, the conf."""
    import conf
    import engine
    import sweep

    # As directories, not module objects: Ray Client (ray://) pickles the runtime env.
    return {"py_modules": [os.path.dirname(m.__file__) for m in (engine, sweep, conf)]}


# Ray resolves 127.0.0.1 to the host's address and binds its gRPC servers to
# every interface, except where "clusters are not supported" (Windows, macOS):
# there it keeps the node on loopback.  That switch is read from the
# environment by Ray's child processes and was read by the driver when it
# imported ray, so both are set.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_local_ray(num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Start an embedded Ray on loopback only, without the dashboard's web UI."""
    from ray._private import ray_constants  # Ray's only switch for it; no public API

    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            address="local",  # never join a cluster started elsewhere on this host
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            include_dashboard=False,
            log_to_driver=False,
        )
    finally:
        os.environ.pop(_LOOPBACK_ENV, None)
        ray_constants.ENABLE_RAY_CLUSTER = True


def warm_workers(cpus: int, stopped: Callable[[], bool] = lambda: False) -> None:
    """Have every CPU's worker process run a one-cell sweep now, as part of
    starting the session, so that the first range does not wait for a
    worker's imports and first calls (~0.5 to 1 s), nor the driver for its
    first task and result.  A warm-up that fails is only logged: the ranges
    meet the same fault, and the sweep reports it there.  Gives up waiting
    once ``stopped()``."""
    from .task import warm_up_workers

    pending = warm_up_workers(max(1, cpus))
    while pending and not stopped():
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        try:
            ray.get(ready)
        except ray.exceptions.RayError as err:
            log.warning("a worker's warm-up failed: %s", str(err).splitlines()[0])


@contextmanager
def ray_session(cfg: RayConfig, stop=None):
    """Connect to the cluster named by ``cfg.address``/``RAY_ADDRESS`` (within
    ``cfg.connect_timeout_s``: ``ClusterUnreachable`` otherwise), or start an
    embedded local Ray on loopback with no dashboard; shut down after.

    ``stop`` (a ``StopSignals``) holds a signal while the driver is in Ray's
    core (starting the local Ray, asking for resources, warming the workers,
    shutting down), where an exception raised by a signal handler can break
    it; the warm-up then stops waiting, and the caller's ``stop.check()``
    raises.  While a cluster is joined (Python code that waits, and a watchdog
    that interrupts ``ray.init``) a signal raises at once."""
    shield = stop.deferred if stop is not None else nullcontext
    stopped = stop.requested if stop is not None else (lambda: False)
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():  # the caller owns this session (tests, notebooks)
        yield
        return
    reaper = None
    try:
        if address:
            given = f"ray.address={cfg.address}" if cfg.address else f"RAY_ADDRESS={address}"
            log.info("joining the Ray cluster at %s", given)
            join_cluster(address, given, cfg.connect_timeout_s, runtime_env())
        else:
            with shield():
                reaper = Reaper()  # if this driver is killed, its local Ray goes too
                with reaper.marking():  # every process of this Ray carries the watcher's mark
                    init_local_ray(cfg.num_cpus, cfg.object_store_memory)
        with shield():
            resources = ray.cluster_resources()
            log.info("Ray: %d node(s), %s CPUs", len(ray.nodes()), resources.get("CPU"))
            warm_workers(int(resources.get("CPU", 1)), stopped)
        yield
    finally:
        with shield():
            ray.shutdown()
            if reaper is not None:
                reaper.close()
