"""``edbus demo`` end to end (separate processes), and the catalog services' guarantees one by one."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edbus import Bus
from edbus_services.catalog import DemoConfig, SignalPublisher
from edbus_services.catalog.planner import plan_events
from edbus_services.catalog.runner import DemoFailed, run_demo
from edbus_services.demo import demo


def demo_processes(marker: Path) -> list[int]:
    """Pids of live demo worker processes whose command line mentions ``marker`` (their work directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"edbus_services.catalog.worker" in cmdline and str(marker).encode() in cmdline:
                found.append(int(entry.name))
    return found


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute(sql).fetchall())


# -- the demo, end to end -------------------------------------------------------------------------------
def test_demo_exits_zero_with_replica_equal_to_source_poison_dead_lettered_and_no_process_left(tmp_path: Path):
    workdir = tmp_path / "run"
    result = CliRunner().invoke(demo, ["--workdir", str(workdir), "--courses", "30", "--changes", "300",
                                       "--poison", "3", "--rate", "0", "--timeout", "25"])

    assert result.exit_code == 0, result.output
    assert "xAPI feed: not run (no LRS" in result.output  # said in one line; no xapi process ran
    assert "xapi-feed=" not in result.output and "xapi:" not in result.output
    assert re.search(r"replica equals source\s+yes", result.output)
    assert re.search(r"dead letters\s+3 in course-catalog\.replica\.dlq", result.output)
    assert re.search(r"rebuild by replay\s+yes", result.output)
    assert re.search(r"result\s+OK", result.output)
    # the databases say the same as the summary
    columns = ("course_key, name, start_at, end_at, pacing, enrollment_start, enrollment_end, hidden, "
               "invitation_only, last_event_id")
    studio = rows(workdir / "studio.db", f"SELECT {columns} FROM courses")
    assert rows(workdir / "replica.db", f"SELECT {columns} FROM course_runs") == studio
    assert len(studio) >= 30
    poison = {r[0] for r in rows(workdir / "studio.db", "SELECT event_id FROM changes WHERE poison=1")}
    with Bus.from_url(f"sqlite:///{workdir / 'bus.db'}", create=False) as bus:
        dead = [m.record.id for m, _, _ in bus.read(f"{DemoConfig.topic}.replica.dlq")]
        types = {m.record.type for m, _, _ in bus.read(DemoConfig.topic)}
    assert len(poison) == 3 and sorted(dead) == sorted(poison)
    assert types == {"org.openedx.content_authoring.course.created.v1",
                     "org.openedx.content_authoring.course.rerun.completed.v1",
                     "org.openedx.content_authoring.course.catalog_info.changed.v1",
                     "org.openedx.content_authoring.xblock.published.v1"}  # openedx-events' own event types
    published = rows(workdir / "studio.db", "SELECT count(*) FROM changes")[0][0]
    assert rows(workdir / "audit.db", "SELECT count(*) FROM audit_log")[0][0] == published
    assert demo_processes(workdir) == []


def test_replica_killed_mid_run_is_replaced_and_the_replica_still_equals_the_source(tmp_path: Path):
    config = DemoConfig(url=f"sqlite:///{tmp_path / 'bus.db'}", workdir=str(tmp_path), courses=20, changes=400,
                        poison=2, rate=300.0, lease=1.0)

    report = run_demo(config, timeout=25, chaos=True)

    assert report.killed == ["replica-1"] and report.exit_codes["replica-1"] == -9
    assert report.exit_codes["replica-3"] == 0  # the replacement
    assert report.replica_equal and report.applied_exactly_once and report.dead_letters_ok
    assert report.rebuild is not None and report.rebuild.equal and report.rebuild.events == report.published
    assert report.ok
    assert demo_processes(tmp_path) == []


def test_demo_refuses_a_workdir_holding_an_earlier_run(tmp_path: Path):
    (tmp_path / "replica.db").touch()

    result = CliRunner().invoke(demo, ["--workdir", str(tmp_path)])

    assert result.exit_code == 2
    assert "earlier run" in result.output


def test_demo_refuses_a_store_whose_topic_already_has_events(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    with Bus.from_url(url) as bus:
        planned = plan_events(courses=1, changes=0, poison=0, seed=1)[0]
        publisher = SignalPublisher(bus)
        publisher.publish(DemoConfig.topic, [publisher.record(DemoConfig.topic, planned.event_type, planned.data)])

    result = CliRunner().invoke(demo, ["--url", url, "--workdir", str(tmp_path / "run")])

    assert result.exit_code == 1
    assert "already has 1 events" in result.output
    assert demo_processes(tmp_path) == []


def test_a_consumer_failing_at_start_fails_the_run_and_kills_every_process(tmp_path: Path):
    config = DemoConfig(url=f"sqlite:///{tmp_path / 'bus.db'}", workdir=str(tmp_path), courses=5, changes=10,
                        backoff_base=-1.0)  # the consumers refuse this backoff (ConfigError) and exit 1

    with pytest.raises(DemoFailed, match="exited with status 1"):
        run_demo(config, timeout=20)

    assert demo_processes(tmp_path) == []


def test_the_deadline_stops_the_run_and_kills_every_process(tmp_path: Path):
    config = DemoConfig(url=f"sqlite:///{tmp_path / 'bus.db'}", workdir=str(tmp_path), courses=5, changes=5000,
                        rate=50.0)

    with pytest.raises(DemoFailed, match="not finished after 3s"):
        run_demo(config, timeout=3)

    assert demo_processes(tmp_path) == []
