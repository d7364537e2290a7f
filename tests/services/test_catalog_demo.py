"""``edbus demo`` runs other services beside the catalog (``DemoService``): their consumers start with the
catalog's, their producers with Studio, their figures join the summary and their checks the result."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from edbus import Bus, EventType
from edbus.errors import ConfigError
from edbus_services.catalog import DemoConfig, ServiceFigures, ServiceProcess, ServiceProgress
from edbus_services.catalog.runner import run_demo
from edbus_services.catalog.service import load_service
from edbus_services.demo import demo

TICKS = 60


@attrs.frozen
class Tick:
    n: int


TICK = EventType("org.example.demo.tick.v1", Tick, key="n")


class TallyService:
    """A producer publishing TICKS events on its own topic and a consumer recording each in a file."""

    name = "tally"
    topic = "demo-ticks"

    def processes(self, config: DemoConfig) -> Sequence[tuple[str, bool]]:
        return [("tally-consumer", False), ("tally-producer", True)]

    def db(self, config: DemoConfig) -> sqlite3.Connection:
        conn = sqlite3.connect(config.path("tally.db"), isolation_level=None, timeout=30, check_same_thread=False)
        conn.execute("CREATE TABLE IF NOT EXISTS ticks(id TEXT PRIMARY KEY)")
        return conn

    def run(self, process: ServiceProcess) -> int:
        bus = process.config.open_bus("tests/tally")
        try:
            if process.name == "tally-producer":
                return len(bus.publish_many(self.topic, [(TICK, Tick(n)) for n in range(TICKS)]))
            conn = self.db(process.config)
            consumer = bus.consumer(self.topic, "tally", concurrency=1)  # one handler thread: one connection
            consumer.add(TICK, lambda event: conn.execute("INSERT OR IGNORE INTO ticks VALUES (?)", (event.id,)))
            return process.consume(consumer)
        finally:
            bus.close()

    def tallied(self, config: DemoConfig) -> int:
        conn = self.db(config)
        try:
            return int(conn.execute("SELECT count(*) FROM ticks").fetchone()[0])
        finally:
            conn.close()

    def progress(self, config: DemoConfig, bus: Bus) -> ServiceProgress:
        done = self.tallied(config)
        return ServiceProgress(done, TICKS, done == TICKS, "ticks tallied")

    def report(self, config: DemoConfig, bus: Bus) -> ServiceFigures:
        done = self.tallied(config)
        return ServiceFigures((("ticks", f"{done} of {TICKS} tallied"),), ok=done == TICKS)


TALLY = TallyService()
SPEC = f"{__name__}:TALLY"


def test_the_demo_runs_another_service_beside_the_catalog_and_prints_its_figures(tmp_path: Path):
    result = CliRunner().invoke(demo, ["--workdir", str(tmp_path / "run"), "--courses", "10", "--changes", "100",
                                       "--poison", "1", "--rate", "0", "--timeout", "40", "--service", SPEC])

    assert result.exit_code == 0, result.output
    assert re.search(r"tally: ticks\s+60 of 60 tallied", result.output)
    assert re.search(r"tally: checks\s+yes", result.output)
    assert "tally-consumer=0" in result.output and "tally-producer=0" in result.output
    assert re.search(r"result\s+OK", result.output)


def test_a_service_whose_checks_fail_fails_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(TallyService, "report", lambda self, config, bus: ServiceFigures((), ok=False))
    config = DemoConfig(url=f"sqlite:///{tmp_path / 'bus.db'}", workdir=str(tmp_path), courses=5, changes=20,
                        poison=0, rate=0, services=(SPEC,))

    report = run_demo(config, timeout=40)

    assert report.replica_equal and report.services == [("tally", ServiceFigures((), ok=False))]
    assert not report.ok


@pytest.mark.parametrize(("spec", "problem"), [("nocolon", "module:attribute"), ("no.such.module:X", "does not load"),
                                               (f"{__name__}:TICK", "not a DemoService")])
def test_a_service_that_does_not_load_is_a_config_error(spec: str, problem: str):
    with pytest.raises(ConfigError, match=problem):
        load_service(spec)
