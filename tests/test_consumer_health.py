"""Health probes over real HTTP: /healthz fails when the fetch loop stalls (the store locked by another
process), /readyz when the store is unreachable (while the loop, backing off, stays alive); the
``edbus consume --health-port`` command serves both."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edbus import Bus
from edbus.backends import open_backend
from edbus.bus.consumer import Consumer
from edbus.bus.health import serve_health
from tests.conftest import eventually
from tests.events import SEQ, Seq
from tests.test_consumer_store_errors import FAST_RETRY, FaultyBackend

ROOT = Path(__file__).resolve().parent.parent


def status(port: int, path: str) -> int:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code


@contextlib.contextmanager
def running(consumer: Consumer) -> Iterator[int]:
    """Runs ``consumer`` in a thread with its probes on a free port; yields the port."""
    port, stop_health = serve_health(consumer.health, 0, address="127.0.0.1")
    runner = threading.Thread(target=consumer.run, kwargs={"install_signals": False})
    runner.start()
    try:
        yield port
    finally:
        consumer.stop()
        runner.join(60)
        stop_health()
    assert not runner.is_alive()


def test_healthz_fails_while_the_fetch_loop_stalls_and_recovers_after(tmp_path: Path) -> None:
    path = tmp_path / "edbus.db"
    with Bus.from_url(f"sqlite:///{path}") as bus:
        bus.publish("t", SEQ, Seq("k", 1))
        consumer = bus.consumer("t", "s")
        consumer.handler(SEQ)(lambda e: None)
        consumer.health.stall_after = 0.5
        with running(consumer) as port:
            eventually(lambda: status(port, "/healthz") == 200 and status(port, "/readyz") == 200)
            locker = sqlite3.connect(path, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")  # another process holding the store: every fetch waits
            try:
                eventually(lambda: status(port, "/healthz") == 503, timeout=10)
                body = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
                assert body["alive"] is False and body["last_loop_turn_seconds_ago"] > 0.5
                assert status(port, "/readyz") == 503  # not alive, so not ready either
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            eventually(lambda: status(port, "/healthz") == 200, timeout=10)
            assert status(port, "/nothing") == 404
    assert status_after_stop_refused(port)


def status_after_stop_refused(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_readyz_fails_while_the_store_is_unreachable_and_healthz_stays_ok(url: str) -> None:
    backend = FaultyBackend(open_backend(url))
    with Bus(backend) as bus:
        bus.publish("t", SEQ, Seq("k", 1))
        consumer = bus.consumer("t", "s")
        consumer.store_retry = FAST_RETRY
        seen: list[int] = []
        consumer.handler(SEQ)(lambda e: seen.append(e.data.n))
        with running(consumer) as port:
            eventually(lambda: seen == [1] and status(port, "/readyz") == 200, timeout=30)
            backend.down.set()
            eventually(lambda: status(port, "/readyz") == 503, timeout=10)
            body = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
            assert body["store_reachable"] is False and "injected" in body["store_error"]
            assert status(port, "/healthz") == 200  # backing off is alive: no restart wanted
            backend.down.clear()
            eventually(lambda: status(port, "/readyz") == 200, timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_edbus_consume_serves_its_probes_on_health_port_and_refuses_a_port_in_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/edbus.db"
    with Bus.from_url(url) as bus:
        bus.publish("t", SEQ, Seq("k", 1))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "edbus.cli.main", "--url", url, "consume", "t", "s", "--print",
               "--health-port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def answers() -> bool:
            try:
                return status(port, "/healthz") == 200 and status(port, "/readyz") == 200
            except httpx.ConnectError:
                return False

        eventually(answers, timeout=30)
        busy = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 1
        assert f"--health-port: cannot serve health probes on 0.0.0.0:{port}" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
