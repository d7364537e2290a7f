"""``edbus demo --lrs``: the catalog demo and the xAPI feed at once, against a real LRS (Ralph, the session's).
The LRS must hold exactly the statements of the learning events the simulated LMS put on the bus (read back
from the store, through the mapping), each once; the demo's own check must pass, and fail when the LRS
misses a statement."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edbus import Bus
from edbus_services.catalog import DemoConfig
from edbus_services.demo import demo
from edbus_services.xapi import XapiConfig, statement_problems, to_statement
from edbus_services.xapi.demo import SERVICE
from edbus_services.xapi.feed import DEFAULT_TOPICS
from tests.services.conftest import PASSWORD, USER, Ralph
from tests.services.test_demo import demo_processes

LRS_FIELDS = ("stored", "authority")  # what the LRS adds to a statement


def on_the_bus(url: str, lms_url: str) -> dict[str, dict[str, Any]]:
    """The statements of every learning event in the store, by id (what the feed must have stored)."""
    config = XapiConfig(lms_url=lms_url)
    expected: dict[str, dict[str, Any]] = {}
    with Bus.from_url(url, create=False) as bus:
        for topic in DEFAULT_TOPICS:
            for message, envelope, data in bus.read(topic):
                statement = to_statement(config, message.record.type, data, envelope.time)
                assert statement is not None and statement["id"] not in expected
                expected[statement["id"]] = statement
    return expected


def test_the_demo_runs_the_xapi_feed_beside_the_catalog_and_the_lrs_holds_each_statement_once(
        tmp_path: Path, ralph: Ralph, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "run"
    result = CliRunner().invoke(
        demo, ["--workdir", str(workdir), "--courses", "10", "--changes", "300", "--poison", "1", "--rate", "0",
               "--timeout", "40", "--lrs", ralph.endpoint, "--lrs-user", USER],
        env={"EDBUS_LRS_PASSWORD": PASSWORD})

    assert result.exit_code == 0, result.output
    assert f"xAPI feed: statements to the LRS at {ralph.endpoint}" in result.output
    assert re.search(r"xapi: events published\s+100 of 100 planned", result.output)
    assert re.search(r"xapi: statements in the LRS\s+100 of this run's .* each expected id once: yes, none missing "
                     r"\(0\), none unexpected \(0\)", result.output)
    assert re.search(r"xapi: dead letters\s+0", result.output)
    assert re.search(r"xapi: publish → stored\s+p50 \d+ ms, p99 \d+ ms", result.output)
    assert re.search(r"xapi: checks\s+yes", result.output)
    assert re.search(r"replica equals source\s+yes", result.output)  # the catalog ran too
    assert re.search(r"result\s+OK", result.output)
    assert "xapi-feed=0" in result.output and "lms=0" in result.output
    assert demo_processes(workdir) == []

    # the LRS, read independently: exactly the statements of the events on the bus, each stored once
    lms_url = json.loads((workdir / "xapi-run.json").read_text())["lms_url"]
    expected = on_the_bus(f"sqlite:///{workdir / 'bus.db'}", lms_url)
    stored = ralph.statements(lms_url)
    assert len(expected) == 100
    assert {s["id"]: {k: v for k, v in s.items() if k not in LRS_FIELDS} for s in stored} == expected
    assert len(stored) == len(ralph.stored_lines(lms_url)) == 100
    for statement in stored:
        assert statement_problems(statement) == []
    with sqlite3.connect(workdir / "lms.db") as db:  # the LMS's log names the same statements
        assert {r[0] for r in db.execute("SELECT statement_id FROM published")} == set(expected)
    kinds = {s["context"]["extensions"]["https://w3id.org/xapi/openedx/extensions/event-type"] for s in stored}
    assert {"org.openedx.learning.course.enrollment.created.v1",
            "org.openedx.learning.course.persistent_grade_summary.changed.v1",
            "org.openedx.learning.course.passing.status.updated.v1"} <= kinds

    # the check fails when the LRS misses a statement the LMS published
    with sqlite3.connect(workdir / "lms.db") as db:
        db.execute("UPDATE published SET statement_id='00000000-0000-5000-8000-000000000000' WHERE rowid=1")
    config = DemoConfig(url=f"sqlite:///{workdir / 'bus.db'}", workdir=str(workdir), courses=10, changes=300)
    for name, value in (("EDBUS_DEMO_LRS_URL", ralph.endpoint), ("EDBUS_DEMO_LRS_USER", USER),
                        ("EDBUS_LRS_PASSWORD", PASSWORD)):
        monkeypatch.setenv(name, value)
    with Bus.from_url(config.url, create=False) as bus:
        figures = SERVICE.report(config, bus)
    assert not figures.ok
    text = dict(figures.rows)["statements in the LRS"]
    assert "none missing (1), none unexpected (1)" in text


def test_lrs_without_a_user_or_password_is_a_usage_error(tmp_path: Path, ralph: Ralph) -> None:
    result = CliRunner().invoke(demo, ["--workdir", str(tmp_path / "run"), "--lrs", ralph.endpoint],
                                env={"EDBUS_LRS_PASSWORD": None})

    assert result.exit_code == 2
    assert "--lrs needs --lrs-user and the password in $EDBUS_LRS_PASSWORD" in result.output


def test_an_lrs_that_refuses_the_credentials_stops_the_demo_before_it_starts(tmp_path: Path, ralph: Ralph) -> None:
    result = CliRunner().invoke(demo, ["--workdir", str(tmp_path / "run"), "--lrs", ralph.endpoint, "--lrs-user",
                                       USER], env={"EDBUS_LRS_PASSWORD": "not-the-password"})

    assert result.exit_code == 1
    assert "the LRS is not usable" in result.output and "HTTP 401" in result.output
    assert not (tmp_path / "run").exists()  # nothing started
