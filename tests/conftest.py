"""Shared fixtures: one fixture per backend, and a poll-with-deadline helper."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from edbus.backends import Backend, open_backend
from edbus.bus import Bus

T = TypeVar("T")

BACKENDS = ["sqlite"]


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


def backend_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/edbus.db"
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
