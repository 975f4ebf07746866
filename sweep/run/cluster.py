"""Joining an existing Ray cluster, within a bounded time.

``ray.init(address=...)`` retries an address that does not answer for a long
time, printing Ray's own warnings and the address as Ray rewrote it.  So the
driver first reaches the cluster's port itself, retrying until
``connect_timeout_s``; only a port that answers is handed to ``ray.init``, and
that gets ``connect_timeout_s`` again for Ray's handshake and the upload of
this code (a watchdog ends the driver, with the same one line, if it takes
longer).  Every message names the address as the user gave it.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

import ray

RETRY_S = 0.5
CONNECT_EXIT_CODE = 2


class ClusterUnreachable(ConnectionError):
    """The cluster named by the user did not answer in time, or refused the driver."""

    def __init__(self, given: str, reason: str, timeout_s: float):
        self.given = given
        super().__init__(
            f"cannot join the Ray cluster at {given}: {reason}. Check the address (allowed "
            "'auto', 'host:port' of the head's GCS, or 'ray://host:10001'), that the cluster "
            f"runs, or raise ray.connect_timeout_s (now {timeout_s:g} s)"
        )


def host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` or ``ray://host:port`` -> (host, port); None for 'auto' and the like."""
    text = address if "://" in address else f"tcp://{address}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


def recorded_address(address: str) -> str | None:
    """What 'auto' stands for on this host: the cluster ``ray start`` recorded."""
    if address != "auto":
        return address
    try:  # Ray's own lookup (the address file of the last `ray start`); no public API
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # no cluster recorded: ray.init says so itself, at once
        return None


def wait_for_port(host: str, port: int, deadline: float) -> str | None:
    """None once a TCP connection to ``host:port`` succeeds; the last error at the deadline."""
    reason = "no answer"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return reason
        try:
            with socket.create_connection((host, port), timeout=min(left, 5.0)):
                return None
        except OSError as err:
            reason = err.strerror or str(err) or type(err).__name__
        time.sleep(min(RETRY_S, max(0.0, deadline - time.monotonic())))


def join_cluster(address: str, given: str, timeout_s: float, runtime_env: dict) -> None:
    """``ray.init`` on the cluster at ``address`` (``given``: how the user named it)."""
    target = recorded_address(address)
    where = host_port(target) if target else None
    if where is not None:
        reason = wait_for_port(*where, time.monotonic() + timeout_s)
        if reason is not None:
            raise ClusterUnreachable(given, f"{reason} within {timeout_s:g} s", timeout_s)
    watchdog = threading.Timer(timeout_s, _give_up, (given, timeout_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    except (ConnectionError, RuntimeError, TimeoutError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ClusterUnreachable(given, first.rstrip("."), timeout_s) from None
    finally:
        watchdog.cancel()


def _give_up(given: str, timeout_s: float) -> None:
    """The port answered, but Ray's handshake did not finish in time: ``ray.init``
    cannot be interrupted from here, so the driver ends (it started no Ray)."""
    err = ClusterUnreachable(
        given, f"the port answers but Ray did not within {timeout_s:g} s", timeout_s
    )
    print(f"zapsweep: {err}", file=sys.stderr, flush=True)
    os._exit(CONNECT_EXIT_CODE)
