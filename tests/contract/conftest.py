"""The contract suite runs on every backend (``BACKENDS``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BACKENDS, backend_url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path)
