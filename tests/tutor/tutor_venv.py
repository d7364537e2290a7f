"""Tutor from PyPI in a virtualenv of its own, with the plugin of integrations/tutor installed, and a
temporary TUTOR_ROOT per configuration.

The virtualenv (~/.cache/edbus/tutor-venv-<version>) is created once and reused; the plugin is installed
again (not editable: what a wheel holds is what is tested) by each test session.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

TUTOR_VERSION = "22.0.3"
PIP_VERSION = "24.3.1"
REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "integrations" / "tutor"
VENV = Path.home() / ".cache" / "edbus" / f"tutor-venv-{TUTOR_VERSION}"
_HOOKS = Path(__file__).with_name("tutor_hooks.py")


class TutorUnavailable(RuntimeError):
    """tutor could not be installed (no network to PyPI, no python3.11 venv)."""


def _run(*args: str | Path, timeout: float = 600) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise TutorUnavailable(f"{' '.join(map(str, args))} exited {done.returncode}: {done.stderr[-2000:]}")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One test session at a time creates the virtualenv or installs the plugin into it."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / f"{VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def install() -> Path:
    """The virtualenv's bin folder, with tutor and the current plugin installed."""
    python = VENV / "bin" / "python"
    with _locked():
        if not (VENV / ".complete").exists():
            _run(sys.executable, "-m", "venv", "--clear", VENV)
            _run(python, "-m", "pip", "install", "--quiet", f"pip=={PIP_VERSION}")
            _run(python, "-m", "pip", "install", "--quiet", f"tutor=={TUTOR_VERSION}")
            (VENV / ".complete").touch()
        with tempfile.TemporaryDirectory() as build:  # setuptools writes build/ beside the sources: not here
            source = shutil.copytree(PLUGIN, Path(build) / "plugin",
                                     ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            _run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", source)
    return VENV / "bin"


class TutorRoot:
    """A TUTOR_ROOT of its own: ``tutor`` commands, and the files they render under ``env/``."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin = bin_dir
        self.root = root
        self.env = {**os.environ, "TUTOR_ROOT": str(root), "TUTOR_PLUGINS_ROOT": str(root / "plugins")}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / "tutor"), *args], env=self.env, capture_output=True, text=True,
                              timeout=120)

    def check(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"tutor {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done.stdout

    def save(self, **values: Any) -> None:
        """``tutor config save --set KEY=VALUE ...`` (values as YAML, which tutor parses)."""
        sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
        self.check("config", "save", *sets)

    def text(self, *path: str) -> str:
        return (self.root / "env").joinpath(*path).read_text()

    def yaml(self, *path: str) -> list[Any]:
        """Every document of a rendered YAML file (empty ones dropped)."""
        return [doc for doc in yaml.safe_load_all(self.text(*path)) if doc is not None]

    def hooks(self) -> dict[str, Any]:
        """What the plugin adds to tutor's hooks here (tests/tutor/tutor_hooks.py)."""
        done = subprocess.run([str(self.bin / "python"), str(_HOOKS), str(self.root)], env=self.env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def init_task(self) -> str:
        """The plugin's init task for the lms container, rendered as `tutor local do init` renders it."""
        tasks = self.hooks()["init_tasks"]
        assert [service for service, _ in tasks] == ["lms"], tasks
        return str(tasks[0][1])
