"""Leases are renewed by a thread of their own and retention runs beside the consumer loop, in small
transactions: a sweep over a million events while two consumers run with 1 s leases loses no lease (every
event handled once, at its first attempt) and breaks no key's order.

The million events are written with one bulk INSERT (the test's set-up, timed and printed with -s);
the events the consumers handle are published through the bus.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import defaultdict
from pathlib import Path

from edbus import Bus, Event
from edbus.backends import Mode, StartAt
from edbus.backends.sqlite.connection import StoreConnection
from edbus.bus.leases import InFlight, LeaseKeeper
from tests.conftest import eventually
from tests.events import SEQ, Seq

BULK = 1_000_000
KEYS, PER_KEY = 10, 30
LEASE = 1.0


def bulk_acked_events(path: Path, topic: str, subscription: str, count: int) -> float:
    """``count`` old events at the front of ``topic``, acked by ``subscription`` (its cursor past them);
    returns the seconds the INSERT took."""
    started = time.monotonic()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        long_ago = time.time() - 3600
        payload = b"x" * 100
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO events(topic, id, type, key, headers, payload, size, published_at) "
                       "VALUES (?, ?, 'bulk', ?, '{}', ?, 102, ?)",
                       ((topic, f"bulk-{i}", f"k{i % 1000}", payload, long_ago) for i in range(count)))
        db.execute("UPDATE subscriptions SET cursor=(SELECT max(seq) FROM events WHERE topic=?) "
                   "WHERE topic=? AND name=?", (topic, topic, subscription))
        db.execute("COMMIT")
        # the set-up's WAL (200+ MB) is not left for the consumers' checkpoint thread to copy
        while db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:  # busy: a checkpoint thread's turn
            time.sleep(0.01)
    finally:
        db.close()
    return time.monotonic() - started


def test_a_retention_sweep_over_a_million_events_loses_no_one_second_lease_and_keeps_key_order(
        tmp_path: Path) -> None:
    path = tmp_path / "edbus.db"
    url = f"sqlite:///{path}"
    sweeping_bus = Bus.from_url(url, retention=0.0)  # every acked event is past retention
    other_bus = Bus.from_url(url, retention=None)  # a second consumer, on a connection of its own
    sweeping_bus.backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
    inserted = bulk_acked_events(path, "t", "s", BULK)
    print(f"\nbulk insert of {BULK} events: {inserted:.1f} s")

    calls: list[tuple[str, int, int, float, float]] = []  # key, n, attempt, start, end
    lock = threading.Lock()

    def handle(event: Event[Seq]) -> None:
        started = time.monotonic()
        # the first event of each key runs longer than the lease: only renewals keep it
        time.sleep(1.5 * LEASE if event.data.n < KEYS else 0.02)
        with lock:
            calls.append((event.data.key, event.data.n, event.attempt, started, time.monotonic()))

    consumers = []
    for bus in (sweeping_bus, other_bus):
        consumer = bus.consumer("t", "s", concurrency=4, lease=LEASE)
        consumer.handler(SEQ)(handle)
        consumers.append(consumer)
    consumers[0].retention_schedule = (0.0, 600.0)  # sweep at once
    window: list[float] = []  # when the sweep was first and last seen running

    def watch_sweep() -> None:
        sweeper = eventually(lambda: consumers[0].retention_sweeper, timeout=10)
        while sweeper.sweeps == 0:
            if sweeper.sweeping.is_set():
                window[len(window) > 0:] = [time.monotonic()]
            time.sleep(0.005)

    waits: list[float] = []  # how long a small write waited for the store, while the sweep ran

    def probe_writes() -> None:  # through the store's own connection class, as a lease renewal writes
        conn = StoreConnection(path, create=False)
        while not window or watcher.is_alive():
            started = time.monotonic()
            with conn.transaction() as db:
                db.execute("INSERT OR REPLACE INTO topic_rules(topic, rule) VALUES ('probe', 'NONE')")
            waits.append(time.monotonic() - started)
            time.sleep(0.02)
        conn.close()

    runners = [threading.Thread(target=c.run, kwargs={"install_signals": False}) for c in consumers]
    watcher = threading.Thread(target=watch_sweep)
    prober = threading.Thread(target=probe_writes)
    for t in [*runners, watcher, prober]:
        t.start()
    try:
        eventually(lambda: window, timeout=30)  # the sweep has begun
        sweeping_bus.publish_many("t", [(SEQ, Seq(f"k{n % KEYS}", n)) for n in range(KEYS * PER_KEY)])
        eventually(lambda: len(calls) >= KEYS * PER_KEY, timeout=120)
        watcher.join(300)
        prober.join(30)
    finally:
        for c in consumers:
            c.stop()
        for t in runners:
            t.join(60)
    sweeper = consumers[0].retention_sweeper
    assert sweeper is not None and sweeper.deleted >= BULK
    start, end = window[0], window[-1]
    print(f"retention sweep of {sweeper.deleted} events: {end - start:.1f} s while the consumers ran; "
          f"a small write waited at most {max(waits) * 1000:.0f} ms ({len(waits)} writes)")
    dup = [c for c in calls if sum(1 for d in calls if d[:2] == c[:2]) > 1]
    assert len(calls) == KEYS * PER_KEY, (dup, start, end)  # each event handled once
    assert {attempt for _, _, attempt, _, _ in calls} == {1}  # no lease expired: no redelivery
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, n, *_ in sorted(calls, key=lambda c: c[3]):
        by_key[key].append(n)
    assert all(ns == sorted(ns) for ns in by_key.values())
    assert max(waits) < LEASE  # a write (a renewal) always gets in between two batches, well within a lease
    # the proof needs handlers that outlived their lease while the sweep ran
    assert any(s >= start and e <= end and e - s > LEASE for _, _, _, s, e in calls)
    for bus in (sweeping_bus, other_bus):
        bus.close()


def test_the_lease_keeper_renews_what_is_held_while_the_loop_is_busy_elsewhere(tmp_path: Path) -> None:
    with Bus.from_url(f"sqlite:///{tmp_path}/edbus.db") as bus:
        bus.publish("t", SEQ, Seq("k", 1))
        bus.backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
        [delivery] = bus.backend.fetch("t", "s", "c1", 10, 0.3)
        held = InFlight()
        held.add(delivery)
        keeper = LeaseKeeper(bus.backend, held, 0.3).start()
        try:
            time.sleep(1.0)  # several leases long, with no other call on the store
            assert bus.backend.fetch("t", "s", "c2", 10, 0.3) == []  # still ours
            assert keeper.renewals >= 3
        finally:
            keeper.stop()
        eventually(lambda: bus.backend.fetch("t", "s", "c2", 10, 0.3), timeout=5)  # released once not renewed
