"""Many processes on PostgreSQL and MariaDB: service processes write concurrently to shared keys while the
relay is killed with SIGKILL mid-flight and restarted; then a consumer applies the events once each with
the tracking helper, although the bus redelivers some of them."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from edbus import Bus
from edbus.bus.consumer import Event
from edbus.bus.retries import Backoff
from edbus.outbox import first_delivery, outbox_status
from edbus.outbox.tables import outbox
from tests.conftest import eventually
from tests.events import SEQ, Seq
from tests.outbox.business import business, metadata

ROOT = Path(__file__).resolve().parents[2]
EDBUS = str(Path(sys.executable).parent / "edbus")
pytestmark = [pytest.mark.slow,
              pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True, scope="module")]

WRITERS, TRANSACTIONS, PER_TX = 3, 80, 3
TOTAL = WRITERS * TRANSACTIONS * PER_TX

applied = sa.Table("applied", metadata, sa.Column("event_id", sa.String(64), primary_key=True),
                   sa.Column("key", sa.String(100), nullable=False), sa.Column("n", sa.Integer, nullable=False))


def relay(database: str, bus_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen([EDBUS, "--url", bus_url, "outbox", "relay", "--db", database, "--poll", "0.005",
                             "--batch", "25", "--lease-ttl", "1"], cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_relay_killed_mid_flight_loses_nothing_and_keeps_per_key_order(
        database: str, engine: sa.Engine, tmp_path: Path) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(business), [{"key": f"k{k}", "n": 0} for k in range(8)])
    bus_url = f"sqlite:///{tmp_path}/bus.db"
    Bus.from_url(bus_url).close()
    writers = [subprocess.Popen([sys.executable, "-m", "tests.outbox.workers", "write", "--db", database,
                                 "--bus", bus_url, "--name", f"w{i}", "--keys", "8",
                                 "--transactions", str(TRANSACTIONS), "--per-tx", str(PER_TX)],
                                cwd=ROOT, text=True, stderr=subprocess.PIPE) for i in range(WRITERS)]
    kills = 0
    current = relay(database, bus_url)
    for _ in range(4):  # kill the relay whenever it has made progress, mid-stream, and start another
        before = outbox_status(engine).sent
        eventually(lambda before=before: outbox_status(engine).sent >= before + 40, timeout=60)
        current.send_signal(signal.SIGKILL)
        current.wait(10)
        kills += 1
        current = relay(database, bus_url)  # waits for the dead relay's lease to expire, then goes on
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err[-2000:]
    eventually(lambda: outbox_status(engine).pending == 0, timeout=60)
    current.send_signal(signal.SIGTERM)
    _, err = current.communicate(timeout=20)
    assert current.returncode == 0, err[-2000:]
    assert kills == 4

    with engine.connect() as conn:
        recorded = set(conn.execute(sa.select(outbox.c.event_id)).scalars())
    with Bus.from_url(bus_url) as bus:
        published = [(m.record.id, d["key"], d["n"]) for m, _, d in bus.read("seq")]
    assert len(recorded) == TOTAL
    assert {i for i, _, _ in published} == recorded  # nothing lost
    assert len(published) == TOTAL  # a re-sent id is stored once
    by_key: dict[str, list[int]] = defaultdict(list)
    for _, key, n in published:
        by_key[key].append(n)
    for key, ns in by_key.items():
        assert ns == list(range(1, len(ns) + 1)), f"{key} out of order on the bus"

    # the consumer side: the handler's transaction records the event id; a consumer that dies after its
    # commit but before its ack gets the same event again, and the helper suppresses the second effect
    with Bus.from_url(bus_url) as bus:
        consumer = bus.consumer("seq", "apply", backoff=Backoff(0.01, 1, 0.01, 0), max_attempts=5)
        attempts: dict[str, int] = defaultdict(int)
        seen: dict[str, list[int]] = defaultdict(list)

        @consumer.handler(SEQ)
        def apply(event: Event[Seq]) -> None:
            attempts[event.id] += 1
            with engine.begin() as conn:
                if first_delivery(conn, "apply", event.id):
                    conn.execute(sa.insert(applied).values(event_id=event.id, key=event.data.key, n=event.data.n))
                    seen[event.data.key].append(event.data.n)
            if attempts[event.id] == 1 and event.data.n % 5 == 0:
                raise ConnectionError("died after the commit, before the ack")

        consumer.run(idle_timeout=2, install_signals=False)
    assert sum(1 for a in attempts.values() if a > 1) == sum(1 for *_, n in published if n % 5 == 0) > 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(applied)).scalar_one() == TOTAL
    assert all(ns == list(range(1, len(ns) + 1)) for ns in seen.values())  # applied in order, once each
