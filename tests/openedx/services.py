"""Run the two test services (separate Django projects) as separate processes, each on its own database,
both on one bus store: the embedded store (a file in the test's folder) or the test Pulsar broker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import backend_url

ROOT = Path(__file__).resolve().parents[2]
PRODUCING = "tests.openedx.producing_service.settings"
CONSUMING = "tests.openedx.consuming_service.settings"
TOPIC = "all-signals"
GROUP = "consuming-service"


class Services:
    """The bus store (``backend``: "sqlite" or "pulsar", see tests.conftest.BACKENDS), and a database per
    service in one temporary folder. On Pulsar each test has its own topics (a unique prefix in the URL)."""

    def __init__(self, tmp: Path, prefix: str = "test", backend: str = "sqlite") -> None:
        self.tmp = tmp
        self.backend = backend
        self.url = f"sqlite:///{tmp}/bus.db" if backend == "sqlite" else backend_url(backend, tmp)
        self.prefix = prefix
        self.db = {PRODUCING: tmp / "producing.db", CONSUMING: tmp / "consuming.db"}
        for settings in self.db:
            self.manage(settings, "migrate", "--run-syncdb", "-v0")

    def env(self, settings: str, **extra: str) -> dict[str, str]:
        return {**os.environ, "SERVICE_DB": str(self.db[settings]), "EDBUS_URL": self.url,
                "EVENT_BUS_TOPIC_PREFIX": self.prefix, "PYTHONPATH": str(ROOT), **extra}

    def command(self, settings: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "django", *args, f"--settings={settings}"]

    def manage(self, settings: str, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.command(settings, *args), cwd=ROOT, env=self.env(settings, **env), text=True,
                              capture_output=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-3000:]}")
        return done

    def start_consumer(self, extra: dict[str, Any] | None = None, group: str = GROUP) -> subprocess.Popen[str]:
        args = ["consume_events", "-t", TOPIC, "-g", group, *(["--extra", json.dumps(extra)] if extra else [])]
        return subprocess.Popen(self.command(CONSUMING, *args), cwd=ROOT, env=self.env(CONSUMING), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def rows(self, settings: str, table: str) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db[settings]) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY id")]

    def sent(self) -> list[dict[str, Any]]:
        return self.rows(PRODUCING, "producing_service_sentevent")

    def received(self) -> list[dict[str, Any]]:
        return self.rows(CONSUMING, "consuming_service_receivedevent")


def stop(process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    """SIGTERM, as a process manager stops a consumer; returns its exit code and stderr."""
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=timeout)
    return process.returncode, err
