"""Real databases for the outbox tests: SQLite files, and the PostgreSQL and MariaDB servers that
``scripts/databases.sh start`` runs (the test command starts them). Each test module gets its own
throwaway database on each server. Under CI=true a missing server fails the test; elsewhere it skips."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from edbus import Bus
from edbus.outbox import create_tables

ROOT = Path(__file__).resolve().parents[2]
DB_DIR = Path(os.environ.get("EDBUS_DB_DIR")
              or f"/tmp/edbus-databases-{hashlib.md5(str(ROOT).encode()).hexdigest()[:12]}")  # as databases.sh
SERVERS = {"postgresql": "EDBUS_TEST_POSTGRES_URL", "mariadb": "EDBUS_TEST_MARIADB_URL"}
ALL = ["sqlite", "postgresql", "mariadb"]


def server_url(kind: str) -> str:
    var = SERVERS[kind]
    url = os.environ.get(var)
    if not url and (DB_DIR / "urls.env").exists():
        for line in (DB_DIR / "urls.env").read_text().splitlines():
            name, _, value = line.partition("=")
            if name == var:
                url = value
    if not url:
        message = f"{kind}: no server (run scripts/databases.sh start, or set {var})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database URL of the kind in ``request.param``, with the outbox tables, for one module."""
    kind: str = request.param
    if kind == "sqlite":
        path = tmp_path_factory.mktemp("service") / "service.db"
        url = f"sqlite:///{path}"
        engine = sa.create_engine(url)
        create_tables(engine)
        engine.dispose()
        yield url
        return
    base = sa.make_url(server_url(kind))
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    create_tables(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE {name}"))
        admin.dispose()


@pytest.fixture
def engine(database: str) -> Iterator[sa.Engine]:
    """An engine on the module's database, its outbox tables emptied before the test."""
    eng = make_engine(database)
    with eng.begin() as conn:
        for table in ("edbus_outbox", "edbus_outbox_lease", "edbus_consumed", "business"):
            if sa.inspect(conn).has_table(table):
                conn.execute(sa.text(f"DELETE FROM {table}"))
    yield eng
    eng.dispose()


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 30})
    return sa.create_engine(url, pool_size=20, max_overflow=20)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    b = Bus.from_url(f"sqlite:///{tmp_path}/bus.db")
    yield b
    b.close()
