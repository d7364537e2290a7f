"""``edbus dashboard`` start-up mistakes: one error line and exit code 1, never a traceback or a server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EDBUS = [sys.executable, "-m", "edbus.cli.main"]


@pytest.mark.parametrize(("case", "expected"), [
    ("missing-store", "no edbus store at"),
    ("short-token", "the token must be at least 16 characters"),
    ("missing-token-file", "cannot read --admin-token-file"),
])
def test_dashboard_start_up_mistake_is_one_error_line(tmp_path: Path, case: str, expected: str) -> None:
    from edbus import Bus

    url = f"sqlite:///{tmp_path}/edbus.db"
    if case != "missing-store":
        Bus.from_url(url).close()
    token = tmp_path / "token"
    if case == "short-token":
        token.write_text("short\n")
    args = [*EDBUS, "--url", url, "dashboard", "--port", "0"]
    if case != "missing-store":
        args += ["--admin-token-file", str(token)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error:") and expected in done.stderr and "Traceback" not in done.stderr
