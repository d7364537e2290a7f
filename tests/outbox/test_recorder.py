"""The recorders on SQLite, PostgreSQL and MariaDB: the event commits or rolls back with the business
change, in each production mode."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from edbus import Bus
from edbus.errors import ConfigError, ValidationError
from edbus.outbox import ProducerMode, ProducerModes, Relay, SQLAlchemyOutbox, outbox_status
from tests.events import CATALOG_CHANGED, SEQ, Seq, course
from tests.outbox.business import business, metadata
from tests.outbox.conftest import ALL

pytestmark = pytest.mark.parametrize("database", ALL, indirect=True, scope="module")


@pytest.fixture(autouse=True)
def _business_table(engine: sa.Engine) -> None:
    metadata.create_all(engine)


def events(bus: Bus, topic: str = "catalog") -> list[str]:
    return [m.record.id for m, _, _ in bus.read(topic)] if any(
        t.topic == topic for t in bus.backend.topics()) else []


def relay_all(engine: sa.Engine, bus: Bus) -> None:
    Relay(engine, bus, poll=0.01).run(until_idle=True)


def test_rollback_leaves_no_event(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(sa.insert(business).values(key="k", n=1))
        recorder.publish(conn, "catalog", CATALOG_CHANGED, course(1))
        raise RuntimeError("the business change fails")
    assert outbox_status(engine).pending == 0
    relay_all(engine, bus)
    assert events(bus) == []


def test_commit_gives_exactly_one_event_with_the_recorded_id(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus)
    with engine.begin() as conn:
        conn.execute(sa.insert(business).values(key="k", n=1))
        event_id = recorder.publish(conn, "catalog", CATALOG_CHANGED, course(1))
    assert events(bus) == []  # not sent before the relay runs
    assert outbox_status(engine).pending == 1
    relay_all(engine, bus)
    relay_all(engine, bus)
    assert events(bus) == [event_id]
    [(_, envelope, data)] = list(bus.read("catalog"))
    assert data["course_key"] == course(1).course_key and envelope.id == event_id
    status = outbox_status(engine)
    assert (status.pending, status.oldest_pending_age, status.sent) == (0, None, 1)


def test_orm_session_rollback_and_commit(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus)
    with Session(engine) as session:
        recorder.publish(session, "catalog", CATALOG_CHANGED, course(1))
        session.rollback()
        kept = recorder.publish(session, "catalog", CATALOG_CHANGED, course(2))
        session.commit()
    relay_all(engine, bus)
    assert events(bus) == [kept]


def test_a_bad_payload_fails_before_commit_and_writes_nothing(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus)
    with pytest.raises(ValidationError), engine.begin() as conn:
        recorder.publish(conn, "catalog", CATALOG_CHANGED, Seq("k", 1))
    assert outbox_status(engine).pending == 0


def test_publish_many_keeps_the_callers_order_and_ids(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus)
    with engine.begin() as conn:
        ids = recorder.publish_many(conn, "seq", [(SEQ, Seq("k", i)) for i in range(5)] + [(SEQ, Seq("k", 5), "my-id")])
    relay_all(engine, bus)
    assert ids[-1] == "my-id"
    assert [m.record.id for m, _, _ in bus.read("seq")] == ids
    assert [d["n"] for _, _, d in bus.read("seq")] == list(range(6))


def test_direct_mode_sends_at_once_even_if_the_transaction_rolls_back(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus, ProducerModes.from_setting("direct"))
    with pytest.raises(RuntimeError), engine.begin() as conn:
        sent = recorder.publish(conn, "catalog", CATALOG_CHANGED, course(1))
        raise RuntimeError
    assert events(bus) == [sent]
    assert outbox_status(engine).pending == 0


def test_on_commit_mode_sends_after_commit_and_nothing_on_rollback(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus, ProducerModes(ProducerMode.ON_COMMIT))
    with Session(engine) as session:
        recorder.publish(session, "catalog", CATALOG_CHANGED, course(1))
        assert events(bus) == []
        session.rollback()
        kept = recorder.publish(session, "catalog", CATALOG_CHANGED, course(2))
        assert events(bus) == []
        session.commit()
        assert events(bus) == [kept]
        session.commit()  # an empty commit sends nothing again
    assert events(bus) == [kept]
    assert outbox_status(engine).pending == 0
    with pytest.raises(ConfigError), engine.begin() as conn:
        recorder.publish(conn, "catalog", CATALOG_CHANGED, course(3))


def test_modes_are_chosen_per_event_type(engine: sa.Engine, bus: Bus) -> None:
    modes = ProducerModes.from_setting({"default": "direct", SEQ.name: "outbox"})
    recorder = SQLAlchemyOutbox(bus, modes)
    with engine.begin() as conn:
        direct = recorder.publish(conn, "mixed", CATALOG_CHANGED, course(1))
        via_outbox = recorder.publish(conn, "mixed", SEQ, Seq("k", 1))
        assert [m.record.id for m, _, _ in bus.read("mixed")] == [direct]
    assert outbox_status(engine).pending == 1
    relay_all(engine, bus)
    assert [m.record.id for m, _, _ in bus.read("mixed")] == [direct, via_outbox]
    with pytest.raises(ConfigError):
        ProducerModes.from_setting("sometimes")
