"""The idempotent-consumer record on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from edbus.outbox import first_delivery
from edbus.outbox.tables import consumed
from edbus.outbox.tracking import purge_consumed
from tests.outbox.business import business, metadata
from tests.outbox.conftest import ALL

pytestmark = pytest.mark.parametrize("database", ALL, indirect=True, scope="module")


def test_an_event_id_is_applied_once_per_subscription(engine: sa.Engine) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        assert first_delivery(conn, "s", "e1")
        conn.execute(sa.insert(business).values(key="k", n=1))
    with engine.begin() as conn:
        assert not first_delivery(conn, "s", "e1")  # a redelivery
        conn.execute(sa.update(business).values(n=2))  # the transaction is still usable after the duplicate
    with Session(engine) as session:
        assert first_delivery(session, "other", "e1")  # another subscription applies it too
        assert not first_delivery(session, "other", "e1")
        session.commit()
    with engine.connect() as conn:
        assert conn.execute(sa.select(business.c.n)).scalar_one() == 2


def test_a_handler_that_rolls_back_leaves_no_record_and_runs_again(engine: sa.Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        assert first_delivery(conn, "s", "e2")
        raise RuntimeError("the handler fails")
    with engine.begin() as conn:
        assert first_delivery(conn, "s", "e2")


def test_old_records_are_purged(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        first_delivery(conn, "s", "old")
        conn.execute(sa.update(consumed).values(consumed_at=0.0))
        first_delivery(conn, "s", "new")
    assert purge_consumed(engine, older_than=3600) == 1
    with engine.connect() as conn:
        assert set(conn.execute(sa.select(consumed.c.event_id)).scalars()) == {"new"}
