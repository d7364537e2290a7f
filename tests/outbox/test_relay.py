"""The relay on SQLite, PostgreSQL and MariaDB: commit order, the lease, purge, depth, and the bus down."""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from edbus import Bus
from edbus.errors import ConfigError
from edbus.outbox import Relay, SQLAlchemyOutbox, outbox_status
from edbus.outbox.tables import outbox
from tests.conftest import eventually
from tests.events import SEQ, Seq
from tests.outbox.conftest import ALL

pytestmark = pytest.mark.parametrize("database", ALL, indirect=True, scope="module")


def record(engine: sa.Engine, recorder: SQLAlchemyOutbox, key: str, n: int) -> str:
    with engine.begin() as conn:
        return recorder.publish(conn, "seq", SEQ, Seq(key, n))


def sent(bus: Bus) -> list[tuple[str, int]]:
    if not any(t.topic == "seq" for t in bus.backend.topics()):
        return []
    return [(d["key"], d["n"]) for _, _, d in bus.read("seq")]


def test_one_relay_holds_the_lease_and_a_standby_takes_over_when_it_stops_renewing(engine: sa.Engine,
                                                                                   bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus)
    active, standby = Relay(engine, bus, lease_ttl=1.0), Relay(engine, bus, lease_ttl=1.0)
    record(engine, recorder, "k", 1)
    assert active.step() == 1
    record(engine, recorder, "k", 2)
    assert standby.step() == 0  # pending rows, but the lease is held
    assert outbox_status(engine).pending == 1
    # the active relay stops renewing (as if hung or killed): the standby takes over once the lease expires
    eventually(lambda: standby.step() == 1, timeout=5)
    assert not active.lease.acquire()  # and the old holder cannot take it back while the standby renews
    assert sent(bus) == [("k", 1), ("k", 2)]


def test_shards_split_the_keys_and_each_has_its_own_active_relay(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus)
    for n in range(1, 4):
        with engine.begin() as conn:
            recorder.publish_many(conn, "seq", [(SEQ, Seq(f"k{k}", n)) for k in range(20)])
    shard0, shard1 = Relay(engine, bus, shard=0, shards=2), Relay(engine, bus, shard=1, shards=2)
    standby0 = Relay(engine, bus, shard=0, shards=2)
    shard0.run(until_idle=True)  # a stopped relay releases its lease: take shard 0's again
    assert shard0.lease.acquire() and not standby0.lease.acquire() and shard1.lease.acquire()
    first = {key for key, _ in sent(bus)}
    assert 0 < len(first) < 20  # shard 0 sent some keys, all their events
    assert outbox_status(engine).pending == 3 * (20 - len(first))
    shard1.run(until_idle=True)
    with pytest.raises(ConfigError):
        Relay(engine, bus, shard=2, shards=2)
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, n in sent(bus):
        by_key[key].append(n)
    assert by_key == {f"k{k}": [1, 2, 3] for k in range(20)}
    assert {key for key, _ in sent(bus)[: 3 * len(first)]} == first  # the other shard's keys came after


def test_a_stopped_relay_releases_its_lease_at_once(engine: sa.Engine, bus: Bus) -> None:
    first, second = Relay(engine, bus, lease_ttl=60.0), Relay(engine, bus, lease_ttl=60.0)
    record(engine, SQLAlchemyOutbox(bus), "k", 1)
    first.run(until_idle=True)
    assert second.lease.acquire()


def test_a_resend_after_a_crash_between_publish_and_mark_stores_each_id_once(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus)
    ids = [record(engine, recorder, "k", n) for n in range(1, 6)]
    Relay(engine, bus).run(until_idle=True)
    with engine.begin() as conn:  # the state a crash after publishing, before marking, leaves
        conn.execute(sa.update(outbox).values(sent_at=None))
    assert Relay(engine, bus).step() == 5
    assert [m.record.id for m, _, _ in bus.read("seq")] == ids


def test_sent_rows_are_purged_after_keep_sent_and_status_shows_depth_and_age(engine: sa.Engine, bus: Bus) -> None:
    recorder = SQLAlchemyOutbox(bus)
    for n in range(1, 4):
        record(engine, recorder, "k", n)
    first = outbox_status(engine)
    assert first.pending == 3 and first.sent == 0
    assert first.oldest_pending_age is not None and first.oldest_pending_age >= 0
    eventually(lambda: (outbox_status(engine).oldest_pending_age or 0) > first.oldest_pending_age)
    relay = Relay(engine, bus, keep_sent=3600)
    relay.run(until_idle=True)
    assert relay.purge() == 0  # kept for an hour
    assert outbox_status(engine).sent == 3
    assert Relay(engine, bus, keep_sent=0).purge() == 3
    assert outbox_status(engine) == type(first)(0, None, 0)


@pytest.fixture
def locked_bus(tmp_path: Path) -> Iterator[tuple[Bus, sqlite3.Connection]]:
    """A bus whose store another process-like connection holds write-locked: appends fail (bus down)."""
    path = tmp_path / "down.db"
    bus = Bus.from_url(f"sqlite:///{path}")
    bus.backend.conn.busy_timeout = 0.05  # type: ignore[attr-defined]  # fail fast instead of waiting 30 s
    lock = sqlite3.connect(path, isolation_level=None)
    yield bus, lock
    lock.close()
    bus.close()


def test_while_the_bus_is_down_rows_accumulate_then_drain_in_order(
        engine: sa.Engine, locked_bus: tuple[Bus, sqlite3.Connection]) -> None:
    bus, lock = locked_bus
    recorder = SQLAlchemyOutbox(bus)
    record(engine, recorder, "k0", 0)  # registers the schema while the bus is up
    relay = Relay(engine, bus, poll=0.01, max_backoff=0.2)
    runner = threading.Thread(target=relay.run, daemon=True)
    runner.start()
    eventually(lambda: outbox_status(engine).pending == 0)
    lock.execute("BEGIN EXCLUSIVE")  # the bus goes down
    for n in range(1, 21):
        with engine.begin() as conn:
            recorder.publish_many(conn, "seq", [(SEQ, Seq(f"k{k}", n)) for k in range(5)])
    eventually(lambda: relay.failures >= 3)
    status = outbox_status(engine)
    assert status.pending == 100 and (status.oldest_pending_age or 0) > 0
    lock.execute("COMMIT")  # the bus is back
    eventually(lambda: outbox_status(engine).pending == 0, timeout=20)
    relay.stop()
    runner.join(10)
    assert relay.failures == 0
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, n in sent(bus):
        by_key[key].append(n)
    assert by_key.pop("k0") == [0, *range(1, 21)]
    assert by_key == {f"k{k}": list(range(1, 21)) for k in range(1, 5)}
