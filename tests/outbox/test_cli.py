"""``edbus outbox status`` and ``edbus outbox relay --until-idle`` on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from edbus import Bus
from edbus.cli.main import cli
from edbus.outbox import SQLAlchemyOutbox
from tests.events import SEQ, Seq
from tests.outbox.conftest import ALL

pytestmark = pytest.mark.parametrize("database", ALL, indirect=True, scope="module")


def test_status_shows_the_pending_rows_and_the_relay_drains_them(database: str, engine: sa.Engine,
                                                                  bus: Bus, tmp_path: Path) -> None:
    with engine.begin() as conn:
        ids = SQLAlchemyOutbox(bus).publish_many(conn, "seq", [(SEQ, Seq("k", n)) for n in range(3)])
    runner = CliRunner()
    status = runner.invoke(cli, ["outbox", "status", "--db", database, "--json"])
    assert status.exit_code == 0, status.output
    shown = json.loads(status.output)
    assert shown["pending"] == 3 and shown["oldest_pending_age"] >= 0 and shown["sent"] == 0
    bus_url = f"sqlite:///{tmp_path}/bus.db"
    relay = runner.invoke(cli, ["--url", bus_url, "outbox", "relay", "--db", database, "--until-idle"])
    assert relay.exit_code == 0, relay.output
    assert [m.record.id for m, _, _ in bus.read("seq")] == ids
    status = runner.invoke(cli, ["outbox", "status", "--db", database])
    assert status.exit_code == 0 and "pending 0" in status.output
