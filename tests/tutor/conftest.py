"""Fixtures of the Tutor plugin tests: tutor installed from PyPI, and TUTOR_ROOTs with the plugin enabled."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.tutor.tutor_venv import TutorRoot, TutorUnavailable, install


@pytest.fixture(scope="session")
def tutor_bin() -> Path:
    try:
        return install()
    except (TutorUnavailable, OSError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs tutor from PyPI for the Tutor plugin tests: {exc}")
        pytest.skip(f"tutor could not be installed: {exc}")


@pytest.fixture(scope="session")
def seed_root(tutor_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> TutorRoot:
    """A TUTOR_ROOT where ``tutor plugins enable edbus`` ran: its config.yml starts every other root."""
    root = TutorRoot(tutor_bin, tmp_path_factory.mktemp("tutor-seed"))
    root.check("plugins", "enable", "edbus")
    return root


@pytest.fixture(scope="session")
def blank_root(seed_root: TutorRoot, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], TutorRoot]:
    """A new TUTOR_ROOT holding only the seed's config.yml (the plugin enabled, no env rendered yet)."""

    def make() -> TutorRoot:
        root = TutorRoot(seed_root.bin, tmp_path_factory.mktemp("tutor-root"))
        shutil.copy(seed_root.root / "config.yml", root.root / "config.yml")
        return root

    return make


@pytest.fixture(scope="session")
def new_root(blank_root: Callable[[], TutorRoot]) -> Callable[..., TutorRoot]:
    """A new TUTOR_ROOT with the plugin enabled and ``tutor config save --set`` of the values given."""

    def make(**values: Any) -> TutorRoot:
        root = blank_root()
        root.save(**values)
        return root

    return make


CONSUMERS = [
    {"topic": "course-catalog-info-changed", "group": "discovery_catalog", "replicas": 2},
    {"topic": "course-authoring-xblock-lifecycle", "group": "search-index", "service": "cms", "mode": "shared",
     "concurrency": 4},
]


@pytest.fixture(scope="session")
def embedded(new_root: Callable[..., TutorRoot]) -> TutorRoot:
    """The default (embedded) backend with two consumers."""
    return new_root(EDBUS_CONSUMERS=CONSUMERS)


@pytest.fixture(scope="session")
def pulsar(new_root: Callable[..., TutorRoot]) -> TutorRoot:
    """The pulsar backend (and the broker Tutor runs), with the same two consumers."""
    return new_root(EDBUS_BACKEND="pulsar", EDBUS_CONSUMERS=CONSUMERS)
