"""``manage.py consume_events`` of an Open edX service: EDBUS_CONSUMER_HEALTH_PORT serves /healthz and
/readyz (real HTTP); a bad EDBUS_CONSUMER_HANDLER_TIMEOUT is a fatal error with its reason, exit 1."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import eventually
from tests.openedx.services import CONSUMING, GROUP, ROOT, TOPIC, Services, stop


def service_settings(tmp_path: Path, **settings: object) -> str:
    """A settings module: the test consuming service's, plus ``settings``."""
    lines = [f"from {CONSUMING} import *  # noqa: F403", *(f"{k} = {v!r}" for k, v in settings.items())]
    (tmp_path / "probed_settings.py").write_text("\n".join(lines) + "\n")
    return "probed_settings"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_consumer(services: Services, tmp_path: Path, module: str, *extra: str) -> subprocess.Popen[str]:
    env = services.env(CONSUMING, PYTHONPATH=f"{tmp_path}:{ROOT}")
    return subprocess.Popen([sys.executable, "-m", "django", "consume_events", "-t", TOPIC, "-g", GROUP,
                             f"--settings={module}", *extra], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_consume_events_serves_health_probes_on_the_configured_port(tmp_path: Path) -> None:
    services = Services(tmp_path)
    port = free_port()
    module = service_settings(tmp_path, EDBUS_CONSUMER_HEALTH_PORT=port, EDBUS_CONSUMER_HANDLER_TIMEOUT=60)
    proc = run_consumer(services, tmp_path, module)

    def probes() -> tuple[int, int] | None:
        try:
            return (httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code,
                    httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code)
        except httpx.ConnectError:
            assert proc.poll() is None, proc.communicate()[1]
            return None

    try:
        assert eventually(probes, timeout=60) == (200, 200)
    finally:
        code, err = stop(proc)
    assert code == 0, err


def test_a_bad_handler_timeout_setting_is_a_fatal_error_that_names_it(tmp_path: Path) -> None:
    services = Services(tmp_path)
    module = service_settings(tmp_path, EDBUS_CONSUMER_HANDLER_TIMEOUT="soon")
    proc = run_consumer(services, tmp_path, module)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "EDBUS_CONSUMER_HANDLER_TIMEOUT) must be a number, not 'soon'" in err


def test_health_port_and_a_redis_style_consumer_name_given_in_extra_serve_the_probes(tmp_path: Path) -> None:
    """What the Tutor plugin runs: ``--extra '{"health_port": N, ...}'`` (no setting), and the Redis bus's
    ``consumer_name`` option accepted, so its commands run unchanged."""
    services = Services(tmp_path)
    port = free_port()
    module = service_settings(tmp_path)
    proc = run_consumer(services, tmp_path, module, "--extra",
                        f'{{"health_port": {port}, "handler_timeout": 30, "consumer_name": "lms-1"}}')

    def live() -> int | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
        except httpx.ConnectError:
            assert proc.poll() is None, proc.communicate()[1]
            return None

    try:
        assert eventually(live, timeout=60) == 200
    finally:
        code, err = stop(proc)
    assert code == 0, err


def test_metrics_port_setting_serves_the_consumers_counters_and_its_subscriptions_backlog(tmp_path: Path) -> None:
    services = Services(tmp_path)
    port = free_port()
    module = service_settings(tmp_path, EDBUS_CONSUMER_METRICS_PORT=port)
    proc = run_consumer(services, tmp_path, module)

    def scrape() -> str | None:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        except httpx.ConnectError:
            assert proc.poll() is None, proc.communicate()[1]
            return None
        # The server answers before the consumer has subscribed: wait for the subscription's own sample.
        backlog = [line for line in response.text.splitlines() if line.startswith("edbus_subscription_backlog{")]
        return response.text if any(f'subscription="{GROUP}"' in line for line in backlog) else None

    try:
        text = eventually(scrape, timeout=60)
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "# TYPE edbus_consumed_events_total counter" in text  # the consumer's own counters
