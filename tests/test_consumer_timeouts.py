"""``handler_timeout``: a handler past its limit is logged and its event released for retry (a failed
attempt, not an ack); a thread that cannot be freed (blocked on a socket read) ends the run, and
``edbus consume`` exits with status 75 for its supervisor; a handler still running Python is freed."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edbus import Backoff, Bus, Event
from edbus.backends import Mode, StartAt
from edbus.bus.timeouts import EXIT_HANDLER_STUCK, StuckHandlerError
from tests.conftest import eventually
from tests.events import SEQ, Seq

ROOT = Path(__file__).resolve().parent.parent


def redelivered(bus: Bus, topic: str = "t", sub: str = "s") -> list[tuple[int, list[str]]]:
    """(attempt, error types of its history) of every event the subscription delivers now."""
    out = []
    for d in bus.backend.fetch(bus.topic(topic), sub, "inspector", 10, 30):
        out.append((d.attempt, [h.type for h in d.history]))
        bus.backend.nack(d, 0, None)
    return out


def test_a_handler_blocked_on_a_socket_read_has_its_event_released_and_ends_the_run(
        bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    bus.publish_many("t", [(SEQ, Seq("stuck", 0)), *[(SEQ, Seq(f"k{i}", i)) for i in range(1, 6)]])
    consumer = bus.consumer("t", "s", concurrency=2, backoff=Backoff(base=0.05, jitter=0))
    consumer.handler_timeout = 0.5
    reader, writer = socket.socketpair()
    done: list[int] = []

    @consumer.handler(SEQ)
    def handle(event: Event[Seq]) -> None:
        if event.data.key == "stuck":
            reader.recv(1)  # no timeout: only the test's write ends it
        done.append(event.data.n)

    try:
        with caplog.at_level(logging.ERROR, logger="edbus.consumer"), \
                pytest.raises(StuckHandlerError, match=r"ran over handler_timeout=0\.5 s and its thread did not stop"):
            consumer.run(install_signals=False)
        assert any("ran over handler_timeout=0.5 s" in r.getMessage() and "released for retry" in r.getMessage()
                   for r in caplog.records)
        assert sorted(done) == [1, 2, 3, 4, 5]  # the other keys went on meanwhile
        # the stuck event was not acked: it comes again, its time-out counted as a failed attempt
        [(attempt, errors)] = eventually(lambda: redelivered(bus), timeout=15)
        assert attempt == 2 and errors == ["edbus.bus.timeouts.HandlerTimedOut"]
    finally:
        writer.send(b"x")  # free the thread, for the test process's own exit
        reader.close()
        writer.close()


def test_a_handler_still_running_python_is_freed_and_its_event_retried(tmp_path: Path) -> None:
    with Bus.from_url(f"sqlite:///{tmp_path}/edbus.db") as bus:
        bus.publish("t", SEQ, Seq("k", 1))
        consumer = bus.consumer("t", "s", backoff=Backoff(base=0.05, jitter=0))
        consumer.handler_timeout = 0.3
        attempts: list[int] = []

        @consumer.handler(SEQ)
        def handle(event: Event[Seq]) -> None:
            attempts.append(event.attempt)
            if event.attempt == 1:
                while True:  # pure Python: the timeout's exception lands here
                    pass

        assert consumer.run(max_events=1, install_signals=False) == 1
        assert attempts == [1, 2]
        assert bus.backend.subscriptions("t")[0].backlog == 0


HANDLERS = '''
import socket

def setup(consumer):
    def hang(event):
        with socket.create_connection(("127.0.0.1", {port})) as s:
            s.recv(1)  # the server never writes
    consumer.add_fallback(hang)
'''


def test_edbus_consume_exits_with_status_75_when_a_handler_thread_cannot_be_freed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/edbus.db"
    with Bus.from_url(url) as bus:
        bus.publish("t", SEQ, Seq("k", 1))
        bus.backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
    server = socket.create_server(("127.0.0.1", 0))
    (tmp_path / "hanging_handlers.py").write_text(textwrap.dedent(HANDLERS.format(port=server.getsockname()[1])))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    try:
        proc = subprocess.run([sys.executable, "-m", "edbus.cli.main", "--url", url, "consume", "t", "s",
                               "--handler", "hanging_handlers:setup", "--handler-timeout", "0.5"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    assert proc.returncode == EXIT_HANDLER_STUCK, proc.stderr
    assert "its thread did not stop" in proc.stderr
    assert f"exiting with status {EXIT_HANDLER_STUCK}" in proc.stderr
    assert "Traceback" not in proc.stderr
    with Bus.from_url(url) as bus:
        [(attempt, errors)] = eventually(lambda: redelivered(bus), timeout=15)
        assert attempt == 2 and errors == ["edbus.bus.timeouts.HandlerTimedOut"]
