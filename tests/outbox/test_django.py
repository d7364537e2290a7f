"""The Django recorder and relay command on SQLite, PostgreSQL and MariaDB, in a Django service process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from edbus import Bus
from edbus.outbox.tables import outbox
from tests.outbox.conftest import ALL, make_engine, server_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=ALL)
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """An empty database (no tables): the Django migration creates them."""
    import uuid

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/django.db"
        return
    base = sa.make_url(server_url(request.param))
    name = f"dj_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {name}" + (" WITH (FORCE)" if request.param == "postgresql" else "")))
    admin.dispose()


def run_service(db: str, bus_url: str, mode: object) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "tests.outbox.django_service", db, bus_url, json.dumps(mode)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_django_atomic_rollback_sends_nothing_and_commit_sends_once_through_the_relay_command(
        fresh_database: str, tmp_path: Path) -> None:
    bus_url = f"sqlite:///{tmp_path}/bus.db"
    ids = run_service(fresh_database, bus_url, "outbox")
    with Bus.from_url(bus_url) as bus:
        assert [m.record.id for m, _, _ in bus.read("seq")] == ids["committed"]
        assert [d["n"] for _, _, d in bus.read("seq")] == [1, 2, 3]
    engine = make_engine(fresh_database)
    with engine.connect() as conn:  # the migration's table is the one the SQLAlchemy relay reads
        rows = conn.execute(sa.select(outbox.c.event_id, outbox.c.sent_at).order_by(outbox.c.seq)).all()
    engine.dispose()
    assert [r[0] for r in rows] == ids["committed"] and all(r[1] for r in rows)


def test_django_on_commit_mode_per_event_type(fresh_database: str, tmp_path: Path) -> None:
    bus_url = f"sqlite:///{tmp_path}/bus.db"
    ids = run_service(fresh_database, bus_url, {"default": "outbox",
                                                "org.openedx.test.sequence.item.emitted.v1": "on_commit"})
    with Bus.from_url(bus_url) as bus:
        assert [m.record.id for m, _, _ in bus.read("seq")] == ids["committed"]
    engine = make_engine(fresh_database)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one() == 0
    engine.dispose()
