"""Consumer health for supervisors and Kubernetes probes, over HTTP.

``/healthz`` (liveness): 200 while the consumer's fetch loop turned within ``stall_after`` seconds, else
503 (the loop is stuck: restart the process). ``/readyz`` (readiness): 200 while the loop is alive and
its last store call succeeded, else 503 (the store is unreachable; the consumer is backing off and
retrying, a restart would not help). Both answer a short JSON body saying why.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edbus.errors import ConfigError

__all__ = ["DEFAULT_STALL_AFTER", "Health", "serve_health"]

log = logging.getLogger("edbus.health")
DEFAULT_STALL_AFTER = 60.0  # seconds without a turn of the fetch loop before /healthz fails


class Health:
    """What the consumer loop reports: a beat at every turn, and whether the store answered."""

    def __init__(self, stall_after: float = DEFAULT_STALL_AFTER) -> None:
        if stall_after <= 0:
            raise ConfigError("stall_after must be > 0 seconds")
        self.stall_after = stall_after
        self.last_beat = time.monotonic()
        self.store_ok = True
        self.store_error = ""
        self.running = False

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def started(self) -> None:
        self.running = True
        self.beat()

    def stopped(self) -> None:
        self.running = False

    def store_answered(self) -> None:
        self.store_ok, self.store_error = True, ""

    def store_failed(self, error: BaseException) -> None:
        self.store_ok, self.store_error = False, f"{type(error).__name__}: {error}"

    def alive(self) -> tuple[bool, dict[str, object]]:
        since = time.monotonic() - self.last_beat
        ok = self.running and since <= self.stall_after
        return ok, {"alive": ok, "running": self.running, "last_loop_turn_seconds_ago": round(since, 3),
                    "stall_after_seconds": self.stall_after}

    def ready(self) -> tuple[bool, dict[str, object]]:
        alive, body = self.alive()
        ok = alive and self.store_ok
        return ok, {**body, "ready": ok, "store_reachable": self.store_ok,
                    **({"store_error": self.store_error} if self.store_error else {})}


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    probes: dict[str, Callable[[], tuple[bool, dict[str, object]]]] = {
        "/healthz": health.alive, "/readyz": health.ready}

    class Probe(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            probe = probes.get(self.path.split("?", 1)[0])
            if probe is None:
                self._answer(404, {"error": "not found: use /healthz or /readyz"})
                return
            ok, body = probe()
            self._answer(200 if ok else 503, body)

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would flood the consumer's log

    return Probe


def serve_health(health: Health, port: int, *, address: str = "0.0.0.0") -> tuple[int, Callable[[], None]]:
    """Serve ``/healthz`` and ``/readyz`` for ``health`` from a daemon thread; returns the port (the one
    chosen when ``port`` is 0) and a stop function. A port in use is a ``ConfigError``."""
    try:
        server = ThreadingHTTPServer((address, port), _handler(health))
    except OSError as exc:
        raise ConfigError(f"cannot serve health probes on {address}:{port}: {exc.strerror or exc}") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="edbus-health", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return server.server_address[1], stop
