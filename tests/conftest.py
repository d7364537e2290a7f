"""Shared fixtures: one fixture per backend, and a poll-with-deadline helper."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from edbus.backends import Backend, open_backend
from edbus.bus import Bus

T = TypeVar("T")

BACKENDS = ["sqlite", "pulsar"]  # the contract suite and the bus tests run on each
PULSAR_SERVICE = os.environ.get("EDBUS_TEST_PULSAR", "pulsar://127.0.0.1:6650")
PULSAR_ADMIN = os.environ.get("EDBUS_TEST_PULSAR_ADMIN", "http://127.0.0.1:8080")
# more URL options for the test broker, e.g. a secured one (pulsar+ssl:// and https:// above):
# EDBUS_TEST_PULSAR_OPTIONS='tls_ca=/path/ca.pem&token_file=/path/admin.token'
PULSAR_OPTIONS = os.environ.get("EDBUS_TEST_PULSAR_OPTIONS", "")


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.01) -> T:
    """Poll ``check`` until it returns a truthy value or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


def pulsar_ready() -> str | None:
    """None when the test broker answers, else why not."""
    try:
        import pulsar  # noqa: F401
    except ImportError as exc:
        return f"pulsar-client is not installed ({exc})"
    from edbus.backends.pulsar.admin import Admin
    from edbus.backends.pulsar.connection import PulsarConfig
    from edbus.errors import EdbusError

    config = PulsarConfig.parse(pulsar_url())
    admin = Admin(config.admin_urls, config.ns, timeout=3, security=config.security)
    try:
        admin.call("GET", "/admin/v2/clusters")
        return None
    except EdbusError as exc:
        return f"no Pulsar broker at {PULSAR_ADMIN} ({exc}); start one with scripts/pulsar.sh start"
    finally:
        admin.close()


def pulsar_url(prefix: str = "") -> str:
    """The test broker's URL (with EDBUS_TEST_PULSAR_OPTIONS) and a topic prefix."""
    options = f"&{PULSAR_OPTIONS}" if PULSAR_OPTIONS else ""
    return f"{PULSAR_SERVICE}?admin={PULSAR_ADMIN}{options}&prefix={prefix}"


def backend_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/edbus.db"
    if kind == "pulsar":
        problem = pulsar_ready()
        if problem is not None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI needs the Pulsar broker: {problem}")
            pytest.skip(problem)
        # every test its own topics on the shared broker: no wipe between tests
        return pulsar_url(f"t{uuid.uuid4().hex[:12]}-")
    raise ValueError(kind)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path)


@pytest.fixture
def backend(url: str) -> Iterator[Backend]:
    b = open_backend(url)
    yield b
    b.close()


@pytest.fixture
def bus(url: str) -> Iterator[Bus]:
    b = Bus.from_url(url)
    yield b
    b.close()
