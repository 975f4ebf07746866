"""Joining an existing Ray cluster, within a bounded time.

``ray.init(address=...)`` retries an address that does not answer for a long
time, in calls that cannot be interrupted, printing Ray's own warnings and the
address as Ray rewrote it.  So the driver first asks the address itself,
retrying until ``connect_timeout_s``: a TCP connection, then the HTTP/2
preface every gRPC server (Ray's GCS, Ray Client's server) answers with a
SETTINGS frame.  Only an address that answers so is handed to ``ray.init``,
which gets ``connect_timeout_s`` again for Ray's handshake and the upload of
this code (then a watchdog interrupts it, or ends the driver).  Every message
names the address as the user gave it.
"""

from __future__ import annotations

import _thread
import logging
import os
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

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


# An HTTP/2 client's connection preface and an empty SETTINGS frame: a gRPC
# server (Ray's GCS, Ray Client's server) answers with a SETTINGS frame of its own.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HTTP2_SETTINGS = 4


def probe(host: str, port: int, timeout_s: float) -> str | None:
    """None if a gRPC server answers at ``host:port`` within ``timeout_s``;
    else why not.  With Ray's TLS on, a TCP connection is all it checks."""
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return None
        conn.sendall(HTTP2_PREFACE)
        frame = b""
        while len(frame) < 9:
            chunk = conn.recv(9 - len(frame))
            if not chunk:
                return "the port closed the connection: not a Ray (gRPC) server"
            frame += chunk
    return None if frame[3] == HTTP2_SETTINGS else "the port does not speak Ray's protocol (gRPC)"


def wait_for_cluster(host: str, port: int, deadline: float) -> str | None:
    """None once a gRPC server answers at ``host:port``; the last reason at the deadline."""
    reason = "no answer"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return reason
        try:
            reason = probe(host, port, min(left, 5.0))
            if reason is None:
                return None
        except TimeoutError:
            reason = "the port accepts connections but does not answer"
        except OSError as err:
            reason = err.strerror or str(err) or type(err).__name__
        time.sleep(min(RETRY_S, max(0.0, deadline - time.monotonic())))


def join_cluster(address: str, given: str, timeout_s: float, runtime_env: dict) -> None:
    """``ray.init`` on the cluster at ``address`` (``given``: how the user named it)."""
    import ray

    target = recorded_address(address)
    where = host_port(target) if target else None
    if where is not None:
        reason = wait_for_cluster(*where, time.monotonic() + timeout_s)
        if reason is not None:
            raise ClusterUnreachable(given, f"{reason} within {timeout_s:g} s", timeout_s)
    watchdog = Watchdog(given, timeout_s)
    try:
        # Ray's own INFO lines would name the address as Ray rewrote it
        ray.init(
            address=address,
            runtime_env=runtime_env,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except BaseException as err:
        if watchdog.fired.is_set():
            ray.shutdown()
            raise ClusterUnreachable(
                given, f"the port answers but Ray did not within {timeout_s:g} s", timeout_s
            ) from None
        if isinstance(err, (ConnectionError, RuntimeError, TimeoutError)):
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ClusterUnreachable(given, first.rstrip("."), timeout_s) from None
        raise
    finally:
        watchdog.cancel()


class Watchdog:
    """Interrupts the main thread (``ray.init``) after ``timeout_s``; if it does not
    come back from Ray within ``GRACE_S`` more, ends the driver with the same one
    line (it started no Ray of its own)."""

    GRACE_S = 5.0

    def __init__(self, given: str, timeout_s: float):
        self.given, self.timeout_s = given, timeout_s
        self.fired = threading.Event()
        self.done = threading.Event()
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self.done.set()
        self._timer.cancel()

    def _fire(self) -> None:
        if self.done.is_set():
            return
        self.fired.set()
        _thread.interrupt_main()
        if self.done.wait(self.GRACE_S):
            return
        err = ClusterUnreachable(
            self.given, f"the port answers but Ray did not within {self.timeout_s:g} s",
            self.timeout_s,
        )  # fmt: skip
        print(f"zapsweep: {err}", file=sys.stderr, flush=True)
        os._exit(CONNECT_EXIT_CODE)
