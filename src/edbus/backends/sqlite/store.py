"""The embedded backend: a durable event store in one SQLite file, shared by many processes.

Appends are group commits fsynced before they return (WAL, ``synchronous=FULL``). Each subscription has
a cursor (the last event it pulled) and a ``deliveries`` row per pulled event not yet acked; leases on
those rows make redelivery after a consumer's death automatic, and ``key_ordered`` is enforced by never
leasing an event while an earlier one with its key is leased or waiting for a retry.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from edbus._rng import rng as _rng
from edbus.backends.base import (
    Administrable,
    Backend,
    Delivery,
    ErrorInfo,
    Message,
    Mode,
    Record,
    RetentionCapable,
    StartAt,
    SubscriptionStats,
    TopicStats,
    add_failure,
    check_subscription,
    dead_letter_headers,
    dlq_topic,
)
from edbus.backends.sqlite import connection as _connection
from edbus.backends.sqlite.administration import StoreAdministration
from edbus.backends.sqlite.connection import StoreConnection
from edbus.backends.sqlite.wakeup import WakeListener, WakeSender, make_wake_folder
from edbus.errors import ConfigError, NotFoundError, StoreUnavailableError, ValidationError
from edbus.schema.registry import CheckedSchemaRegistry, SchemaRegistry

__all__ = ["SqliteBackend"]

_EVENT_COLUMNS = "ev.seq, ev.id, ev.type, ev.key, ev.headers, ev.payload, ev.published_at, ev.topic"
_GATHER = 0.0005  # at most this long a group commit waits for threads that were in the last one
_HEARTBEAT_EVERY = 5.0  # seconds between a consumer's liveness records
_to_json = json.JSONEncoder(separators=(",", ":")).encode
_INSERT_EVENT = ("INSERT OR IGNORE INTO events(topic, id, type, key, headers, payload, size, published_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


class _Pending:
    """One caller's append waiting for a group commit."""

    __slots__ = ("error", "lead", "records", "rows", "topic", "wake")

    def __init__(self, topic: str, records: Sequence[Record], rows: list[tuple[Any, ...]]) -> None:
        self.topic = topic
        self.records = records
        self.rows = rows
        self.wake: threading.Event | None = None  # a follower's; the leader sets it when done
        self.lead = False  # woken to commit the queue itself
        self.error: BaseException | None = None


def _message(row: Sequence[Any]) -> Message:
    seq, id_, type_, key, headers, payload, published_at, topic = row[:8]
    return Message(Record(id_, type_, key, json.loads(headers), payload), topic, str(seq), published_at)


class SqliteBackend(Backend, Administrable, RetentionCapable):
    """``sqlite:///path/to/edbus.db``. ``window`` bounds the pulled-but-unacked rows per subscription;
    ``synchronous="normal"`` trades the power-loss durability of appends for speed (docs/operations.md)."""

    def __init__(self, path: Path, *, create: bool = True, window: int = 200_000,
                 synchronous: str = "full") -> None:
        self.path = path
        self.window = window
        self.conn = StoreConnection(path, create=create, synchronous=synchronous)
        self.url = f"sqlite:///{path}" + ("?synchronous=normal" if self.conn.durable_sync == "NORMAL" else "")
        self.admin = StoreAdministration(self.conn)
        self._registry = CheckedSchemaRegistry(self.admin)
        self._wake_folder = Path(f"{path}-wake")
        try:
            make_wake_folder(self._wake_folder)
        except OSError as exc:
            self.conn.close()
            raise StoreUnavailableError(f"cannot create {self._wake_folder}: {exc.strerror}") from None
        self._sender = WakeSender(self._wake_folder)
        self._listener: WakeListener | None = None
        self._beats: dict[tuple[int, str], float] = {}
        self._topics: set[str] = set()  # topics this process knows are in the topics table
        self._appends = threading.Lock()  # the group commit's queue (append)
        self._queue: list[_Pending] = []
        self._leading = False
        self._last_batch = 1
        self._appends_generation = _connection.forks()

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SqliteBackend:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, optionally
        ``?synchronous=full|normal``. ``producer=NAME`` is accepted, for settings shared with Pulsar, and
        not needed: the store finds a retried event id in any process."""
        raw, _, query = url[len("sqlite://"):].partition("?")
        if url[:9].lower() != "sqlite://" or not raw.startswith("/") or raw == "/":
            raise ConfigError(f"bad URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
        path = raw[1:]
        if not path or path == ":memory:":
            raise ConfigError(f"bad URL {url!r}: the embedded store needs a file path")
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
        unknown = sorted(set(options) - {"synchronous", "producer"})
        if unknown:
            raise ConfigError(f"bad URL {url!r}: unknown option {unknown[0]!r} (the embedded store takes "
                              "synchronous=full|normal and producer=NAME)")
        return cls(Path(path).expanduser(), create=create, synchronous=options.get("synchronous", "full"))

    @property
    def registry(self) -> SchemaRegistry:
        return self._registry

    # -- producing ---------------------------------------------------------------------------
    def append(self, topic: str, records: Sequence[Record]) -> None:
        """Group commit: appends that arrive while another thread's commit is in progress queue up,
        and the first of them commits them all in one durable transaction once that commit returns
        (8 threads publishing one event per call: one fsync for up to 8 events)."""
        now = time.time()
        rows = []
        for r in records:
            headers = _to_json(r.headers)
            rows.append((topic, r.id, r.type, r.key, headers, r.payload, len(headers) + len(r.payload), now))
        mine = _Pending(topic, records, rows)
        if self._appends_generation != _connection.forks():  # a forked child: the parent's threads are gone
            self._appends, self._queue, self._leading = threading.Lock(), [], False
            self._appends_generation = _connection.forks()
        with self._appends:
            self._queue.append(mine)
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                mine.wake = threading.Event()
        if mine.wake is not None:
            mine.wake.wait()
        if not mine.lead and mine.wake is not None:  # committed (or refused) by another thread
            if mine.error is not None:
                raise mine.error
            return
        self._gather()
        with self._appends:
            batch, self._queue = self._queue, []
        self._last_batch = len(batch)
        self._commit(batch, mine)
        with self._appends:
            if self._queue:  # arrived during this commit: the first of them commits them all
                self._queue[0].lead = True
                self._queue[0].wake.set()  # type: ignore[union-attr]
            else:
                self._leading = False
        if mine.error is not None:
            raise mine.error

    def _gather(self) -> None:
        """When the last commit carried several threads' appends, give those threads (just woken, making
        their next event) up to ``_GATHER`` seconds to queue again, so that they share this commit instead
        of it carrying one event and the next carrying the rest. A lone caller never waits."""
        if self._last_batch < 2:
            return
        deadline = time.perf_counter() + _GATHER
        while len(self._queue) < self._last_batch and time.perf_counter() < deadline:
            time.sleep(0)  # lets the other threads run

    def _commit(self, batch: list[_Pending], leader: _Pending) -> None:
        """Store ``batch`` in one transaction; a refused append (an id already stored with another payload)
        is retried alone, so that it fails only its own caller. Wakes every caller but ``leader``."""
        try:
            self._write(batch)
        except ValidationError as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                for one in batch:
                    try:
                        self._write([one])
                    except Exception as exc_one:
                        one.error = exc_one
        except Exception as exc:
            for one in batch:
                one.error = exc
        except BaseException:
            for one in batch:
                one.error = StoreUnavailableError(f"edbus store {self.path}: the commit of this publish was "
                                                  "interrupted in another thread; nothing was acknowledged")
            raise
        finally:
            for one in batch:
                if one is not leader and one.wake is not None:
                    one.wake.set()

    def _write(self, batch: list[_Pending]) -> None:
        new_topics = {p.topic for p in batch} - self._topics
        with self.conn.transaction(durable=True) as db:
            for topic in new_topics:  # topics are never deleted: once seen by this process, one statement less
                db.execute("INSERT OR IGNORE INTO topics(name, created) VALUES (?, ?)", (topic, time.time()))
            for p in batch:
                if len(p.rows) == 1:
                    stored = db.execute(_INSERT_EVENT, p.rows[0]).rowcount
                else:
                    stored = db.executemany(_INSERT_EVENT, p.rows).rowcount
                if stored != len(p.rows):
                    self._check_duplicates(db, p.topic, p.records)
        self._topics |= new_topics
        self._sender.notify()

    def _check_duplicates(self, db: sqlite3.Connection, topic: str, records: Sequence[Record]) -> None:
        """A duplicate id is a retried publish, stored once; the same id with another payload is a
        mistake that would lose an event, so the whole append is refused."""
        for r in records:
            row = db.execute("SELECT payload FROM events WHERE topic=? AND id=?", (topic, r.id)).fetchone()
            if row is not None and row[0] != r.payload:
                raise ValidationError(f"event id {r.id!r} is already in topic {topic!r} with another "
                                      "payload: nothing of this publish was stored")

    # -- subscriptions -----------------------------------------------------------------------
    def subscribe(self, topic: str, subscription: str, mode: Mode, start: StartAt) -> None:
        check_subscription(subscription)
        now = time.time()
        # durable: a subscription lost in a power cut and created again at "latest" would skip events
        with self.conn.transaction(durable=True) as db:
            row = db.execute("SELECT mode FROM subscriptions WHERE topic=? AND name=?",
                             (topic, subscription)).fetchone()
            if row is not None:
                if row[0] != mode.value:
                    raise ConfigError(f"subscription {subscription!r} on {topic!r} exists in mode "
                                      f"{row[0]}, not {mode.value}")
                return
            db.execute("INSERT OR IGNORE INTO topics(name, created) VALUES (?, ?)", (topic, now))
            cursor = self._position(db, topic, start)
            db.execute("INSERT INTO subscriptions(topic, name, mode, cursor, created) VALUES (?,?,?,?,?)",
                       (topic, subscription, mode.value, cursor, now))

    def unsubscribe(self, topic: str, subscription: str) -> None:
        with self.conn.transaction(durable=True) as db:  # an operator's decision: a power loss must not undo it
            sub, _ = self._sub(db, topic, subscription)
            db.execute("DELETE FROM deliveries WHERE sub=?", (sub,))
            db.execute("DELETE FROM consumers WHERE sub=?", (sub,))
            db.execute("DELETE FROM subscriptions WHERE id=?", (sub,))

    def _sub(self, db: sqlite3.Connection, topic: str, subscription: str) -> tuple[int, Mode]:
        """Looked up in every transaction: another process may delete or recreate it at any time."""
        row = db.execute("SELECT id, mode FROM subscriptions WHERE topic=? AND name=?",
                         (topic, subscription)).fetchone()
        if row is None:
            raise NotFoundError(f"no subscription {subscription!r} on topic {topic!r}")
        return int(row[0]), Mode(row[1])

    def _position(self, db: sqlite3.Connection, topic: str, start: StartAt) -> int:
        """The cursor value that makes ``start`` the next event delivered."""
        if start.where == "earliest":
            return 0
        last = db.execute("SELECT coalesce(max(seq), 0) FROM events WHERE topic=?", (topic,)).fetchone()[0]
        if start.where == "latest":
            return int(last)
        if start.where == "time":
            row = db.execute("SELECT min(seq) FROM events WHERE topic=? AND published_at >= ?",
                             (topic, start.time)).fetchone()
            return int(row[0]) - 1 if row[0] is not None else int(last)
        row = db.execute("SELECT seq FROM events WHERE topic=? AND id=?", (topic, start.event_id)).fetchone()
        if row is None:
            raise NotFoundError(f"no event {start.event_id!r} in topic {topic!r}")
        return int(row[0]) - 1

    def fetch(self, topic: str, subscription: str, consumer: str, limit: int,
              lease: float) -> list[Delivery]:
        now = time.time()
        with self.conn.transaction() as db:
            sub, mode = self._sub(db, topic, subscription)
            self._heartbeat(db, sub, consumer, now)
            if mode is Mode.EXCLUSIVE and not self._own(db, sub, consumer, now, lease):
                return []
            rows = self._deliverable(db, sub, mode, now, limit)
            # Pull new events only when what is pulled already cannot fill the batch: rows queued
            # behind a key that is waiting for a retry never stop other keys from being pulled.
            if len(rows) < limit and self._pull(db, sub, topic, max(limit * 4, 1000)):
                rows = self._deliverable(db, sub, mode, now, limit)
            if not rows:
                return []
            token = _rng.getrandbits(62)
            db.executemany("UPDATE deliveries SET owner=?, lease_expires=?, token=?, attempts=attempts+1 "
                           "WHERE sub=? AND seq=?", [(consumer, now + lease, token, sub, r[0]) for r in rows])
        return [Delivery(_message(r), subscription, r[8] + 1,
                         tuple(ErrorInfo(**h) for h in json.loads(r[9])) if r[9] else (),
                         (sub, r[0], token)) for r in rows]

    def _deliverable(self, db: sqlite3.Connection, sub: int, mode: Mode, now: float,
                     limit: int) -> list[Any]:
        """The next rows that may be leased now, in order, with their event columns."""
        params = {"sub": sub, "now": now, "limit": limit}
        if mode is Mode.EXCLUSIVE:
            # total order: take rows from the front until one is leased or waiting for a retry
            rows = db.execute(
                f"SELECT {_EVENT_COLUMNS}, d.attempts, d.history, d.available_at <= :now "
                "AND d.lease_expires <= :now FROM deliveries d JOIN events ev ON ev.seq = d.seq "
                "WHERE d.sub = :sub ORDER BY d.seq LIMIT :limit", params).fetchall()
            free = []
            for row in rows:
                if not row[10]:
                    break
                free.append(row)
            return free
        if mode is Mode.SHARED:
            return db.execute(
                f"SELECT {_EVENT_COLUMNS}, d.attempts, d.history FROM deliveries d "
                "JOIN events ev ON ev.seq = d.seq WHERE d.sub = :sub AND d.available_at <= :now "
                "AND d.lease_expires <= :now ORDER BY d.seq LIMIT :limit", params).fetchall()
        # a row waits while an earlier row of its key is leased or waiting for a retry: each busy key's
        # first such row, found in one pass (a NOT EXISTS per candidate row re-scanned its key's earlier
        # rows: ~20 % of a consumer's time with a few thousand rows held)
        return db.execute(
            "WITH busy(key, first) AS (SELECT key, min(seq) FROM deliveries WHERE sub = :sub AND key IS NOT NULL "
            "AND (lease_expires > :now OR available_at > :now) GROUP BY key) "
            f"SELECT {_EVENT_COLUMNS}, d.attempts, d.history FROM deliveries d "
            "JOIN events ev ON ev.seq = d.seq LEFT JOIN busy b ON b.key = d.key "
            "WHERE d.sub = :sub AND d.available_at <= :now AND d.lease_expires <= :now "
            "AND (b.first IS NULL OR b.first > d.seq) ORDER BY d.seq LIMIT :limit", params).fetchall()

    def _heartbeat(self, db: sqlite3.Connection, sub: int, consumer: str, now: float) -> None:
        """Record that ``consumer`` is alive (for stats), at most every few seconds."""
        if now - self._beats.get((sub, consumer), 0.0) > _HEARTBEAT_EVERY:
            db.execute("INSERT OR REPLACE INTO consumers(sub, consumer, seen) VALUES (?, ?, ?)",
                       (sub, consumer, now))
            self._beats[(sub, consumer)] = now

    def _own(self, db: sqlite3.Connection, sub: int, consumer: str, now: float, lease: float) -> bool:
        """Exclusive mode: take or keep the subscription unless another live consumer holds it."""
        cur = db.execute("UPDATE subscriptions SET owner=?, owner_expires=? WHERE id=? AND "
                         "(owner IS NULL OR owner=? OR owner_expires <= ?)",
                         (consumer, now + lease, sub, consumer, now))
        return cur.rowcount == 1

    def _pull(self, db: sqlite3.Connection, sub: int, topic: str, limit: int) -> bool:
        """Move up to ``limit`` new events behind the cursor into ``deliveries``; False if none.

        ``window`` caps the rows a subscription holds (a key stuck behind a failing event keeps its
        later events here until the failure is dead-lettered)."""
        held = db.execute("SELECT count(*) FROM (SELECT 1 FROM deliveries WHERE sub=? LIMIT ?)",
                          (sub, self.window)).fetchone()[0]
        room = min(limit, self.window - held)
        if room <= 0:
            return False
        cursor = db.execute("SELECT cursor FROM subscriptions WHERE id=?", (sub,)).fetchone()[0]
        new = db.execute("SELECT seq, key FROM events WHERE topic=? AND seq > ? ORDER BY seq LIMIT ?",
                         (topic, cursor, room)).fetchall()
        if new:
            db.executemany("INSERT OR IGNORE INTO deliveries(sub, seq, key) VALUES (?, ?, ?)",
                           [(sub, seq, key) for seq, key in new])
            db.execute("UPDATE subscriptions SET cursor=? WHERE id=?", (new[-1][0], sub))
        return bool(new)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        with self.conn.transaction() as db:
            db.executemany("DELETE FROM deliveries WHERE sub=? AND seq=? AND token=?",
                           [d.handle for d in deliveries])

    def nack(self, delivery: Delivery, delay: float, error: ErrorInfo | None) -> None:
        history = add_failure(delivery.history, error) if error is not None else delivery.history
        with self.conn.transaction() as db:
            db.execute("UPDATE deliveries SET owner=NULL, lease_expires=0, token=NULL, available_at=?, "
                       "history=?, attempts=attempts-? WHERE sub=? AND seq=? AND token=?",
                       (time.time() + delay, json.dumps([h.as_dict() for h in history]) if history else None,
                        0 if error is not None else 1, *delivery.handle))
        if delay <= 0:
            self._sender.notify()

    def dead_letter(self, delivery: Delivery, error: ErrorInfo) -> None:
        message = delivery.message
        target = dlq_topic(message.topic, delivery.subscription)
        headers = dead_letter_headers(delivery, error)
        record = message.record
        now = time.time()
        with self.conn.transaction(durable=True) as db:
            # rowcount at once: a cursor alive after the lock is released resets its cached statement
            # while another thread may be running it (SQLITE_MISUSE under concurrent threads)
            gone = db.execute("DELETE FROM deliveries WHERE sub=? AND seq=? AND token=?", delivery.handle).rowcount
            if gone != 1:
                return  # our lease expired and the event went to another consumer: it decides
            db.execute("INSERT OR IGNORE INTO topics(name, created) VALUES (?, ?)", (target, now))
            # dead-lettered again (after a replay): the latest error and history replace the old ones
            text = _to_json(headers)
            db.execute("INSERT OR REPLACE INTO events(topic, id, type, key, headers, payload, size, "
                       "published_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (target, record.id, record.type, record.key, text, record.payload,
                        len(text) + len(record.payload), now))

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> None:
        if not deliveries:
            return
        until = time.time() + lease
        with self.conn.transaction() as db:
            db.executemany("UPDATE deliveries SET lease_expires=? WHERE sub=? AND seq=? AND token=?",
                           [(until, *d.handle) for d in deliveries])
            # exclusive mode: a consumer busy with long handlers keeps the subscription
            first = deliveries[0].handle
            db.execute("UPDATE subscriptions SET owner_expires=? WHERE id=? AND owner="
                       "(SELECT owner FROM deliveries WHERE sub=? AND seq=? AND token=?)",
                       (until, first[0], *first))

    def wait(self, timeout: float) -> None:
        if self._listener is None or self._listener.pid != os.getpid():
            self._listener = WakeListener(self._wake_folder)
        self._listener.wait(timeout)

    # -- replay and readers ------------------------------------------------------------------
    def seek(self, topic: str, subscription: str, start: StartAt) -> None:
        with self.conn.transaction(durable=True) as db:  # a replay a power loss undid would be lost silently
            sub, _ = self._sub(db, topic, subscription)
            cursor = self._position(db, topic, start)
            db.execute("DELETE FROM deliveries WHERE sub=?", (sub,))
            db.execute("UPDATE subscriptions SET cursor=? WHERE id=?", (cursor, sub))
        self._sender.notify()

    def read(self, topic: str, start: StartAt, limit: int, after: str | None = None) -> list[Message]:
        with self.conn.transaction(write=False) as db:
            cursor = int(after) if after is not None else self._position(db, topic, start)
            rows = db.execute(f"SELECT {_EVENT_COLUMNS} FROM events ev WHERE ev.topic=? AND ev.seq > ? "
                              "ORDER BY ev.seq LIMIT ?", (topic, cursor, limit)).fetchall()
        return [_message(r) for r in rows]

    # -- dead letters, retention, stats ------------------------------------------------------
    def redrive(self, topic: str, subscription: str, event_ids: Sequence[str] | None) -> int:
        return self.admin.redrive(topic, subscription, event_ids, self._sub)

    def purge_dead_letters(self, topic: str, subscription: str, event_ids: Sequence[str] | None) -> int:
        return self.admin.purge(dlq_topic(topic, subscription), event_ids)

    def enforce_retention(self, older_than: float) -> int:
        return self.admin.enforce_retention(older_than)

    def topics(self) -> list[TopicStats]:
        return self.admin.topics()

    def subscriptions(self, topic: str | None = None) -> list[SubscriptionStats]:
        return self.admin.subscriptions(topic)

    def close(self) -> None:
        if self._listener is not None and self._listener.pid == os.getpid():
            self._listener.close()
        self._sender.close()
        self.conn.close()
