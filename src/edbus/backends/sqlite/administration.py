"""The embedded store's administration: schema storage, stats, dead-letter redrive and purge, retention.

The slower paths, apart from the append/fetch/ack loop of ``store.py``."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence

from edbus.backends.base import Mode, SubscriptionStats, TopicStats, dlq_topic
from edbus.backends.sqlite.connection import StoreConnection

__all__ = ["StoreAdministration"]

log = logging.getLogger("edbus.sqlite")

_RETENTION_BATCH = 1000  # events per retention transaction: a few milliseconds of write lock
_RETENTION_PAUSE = 0.002  # seconds between two batches: other writers of the store get in

SubLookup = Callable[[sqlite3.Connection, str, str], tuple[int, Mode]]


def _ids_clause(event_ids: Sequence[str] | None) -> tuple[str, list[str]]:
    if event_ids is None:
        return "", []
    return f" AND id IN ({','.join('?' * len(event_ids))})", list(event_ids)


class StoreAdministration:
    """Everything of the store besides producing and consuming: schemas and topic rules, stats, dead-letter
    redrive and purge, retention."""

    def __init__(self, conn: StoreConnection) -> None:
        self.conn = conn

    # -- SchemaStorage -----------------------------------------------------------------------
    def load_schema_versions(self, event_type: str) -> list[tuple[int, str, float]]:
        with self.conn.transaction(write=False) as db:
            return [(r[0], r[1], r[2]) for r in db.execute(
                "SELECT version, schema, registered_at FROM schemas WHERE event_type=? ORDER BY version",
                (event_type,))]

    def insert_schema_version(self, event_type: str, version: int, schema_json: str) -> bool:
        with self.conn.transaction(durable=True) as db:
            # rowcount at once: a cursor alive after the lock is released resets its cached statement
            added: int = db.execute("INSERT OR IGNORE INTO schemas(event_type, version, schema, registered_at) "
                                    "VALUES (?, ?, ?, ?)", (event_type, version, schema_json, time.time())).rowcount
        return added == 1

    def list_event_types(self) -> list[str]:
        with self.conn.transaction(write=False) as db:
            return [r[0] for r in db.execute("SELECT DISTINCT event_type FROM schemas ORDER BY 1")]

    def load_rule(self, topic: str) -> str | None:
        with self.conn.transaction(write=False) as db:
            row = db.execute("SELECT rule FROM topic_rules WHERE topic=?", (topic,)).fetchone()
        return row[0] if row else None

    def save_rule(self, topic: str, rule: str) -> None:
        with self.conn.transaction(durable=True) as db:
            db.execute("INSERT OR REPLACE INTO topic_rules(topic, rule) VALUES (?, ?)", (topic, rule))

    # -- stats -------------------------------------------------------------------------------
    def topics(self) -> list[TopicStats]:
        with self.conn.transaction(write=False) as db:
            rows = db.execute(
                "SELECT t.name, count(e.seq), coalesce(sum(e.size), 0), "
                "(SELECT count(*) FROM subscriptions s WHERE s.topic=t.name) "
                "FROM topics t LEFT JOIN events e ON e.topic=t.name GROUP BY t.name ORDER BY t.name").fetchall()
        return [TopicStats(*r) for r in rows]

    def subscriptions(self, topic: str | None = None) -> list[SubscriptionStats]:
        now = time.time()
        out = []
        with self.conn.transaction(write=False) as db:
            subs = db.execute("SELECT id, topic, name, mode, cursor FROM subscriptions "
                              "WHERE ?1 IS NULL OR topic=?1 ORDER BY topic, name", (topic,)).fetchall()
            for sub, top, name, mode, cursor in subs:
                unpulled, first_new = db.execute(
                    "SELECT count(*), min(published_at) FROM events WHERE topic=? AND seq > ?",
                    (top, cursor)).fetchone()
                held, leased, first_held = db.execute(
                    "SELECT count(*), coalesce(sum(d.lease_expires > ?), 0), min(e.published_at) "
                    "FROM deliveries d JOIN events e ON e.seq=d.seq WHERE d.sub=?", (now, sub)).fetchone()
                dead = db.execute("SELECT count(*) FROM events WHERE topic=?",
                                  (dlq_topic(top, name),)).fetchone()[0]
                consumers = db.execute("SELECT count(*) FROM consumers WHERE sub=? AND seen > ?",
                                       (sub, now - 60)).fetchone()[0]
                oldest = min((t for t in (first_new, first_held) if t is not None), default=None)
                out.append(SubscriptionStats(top, name, Mode(mode), unpulled + held, leased, dead,
                                             None if oldest is None else max(0.0, now - oldest), consumers))
        return out

    # -- dead letters ------------------------------------------------------------------------
    def redrive(self, topic: str, subscription: str, event_ids: Sequence[str] | None,
                lookup: SubLookup) -> int:
        """Put dead letters back in front of the subscription (only that one), with fresh attempts."""
        dlq = dlq_topic(topic, subscription)
        clause, params = _ids_clause(event_ids)
        with self.conn.transaction(durable=True) as db:
            sub, _ = lookup(db, topic, subscription)
            dead = db.execute(f"SELECT seq, id, key FROM events WHERE topic=?{clause} ORDER BY seq",
                              [dlq, *params]).fetchall()
            redriven = 0
            for dseq, id_, key in dead:
                original = db.execute("SELECT seq FROM events WHERE topic=? AND id=?", (topic, id_)).fetchone()
                if original is None:
                    # retention keeps dead-lettered originals, so this is a subscription that was
                    # deleted and created again; re-appending would deliver it to every subscription
                    log.warning("cannot redrive %s on %s/%s: the original event is gone", id_, topic,
                                subscription)
                    continue
                db.execute("INSERT OR REPLACE INTO deliveries(sub, seq, key) VALUES (?, ?, ?)",
                           (sub, original[0], key))
                db.execute("DELETE FROM events WHERE seq=?", (dseq,))
                redriven += 1
        return redriven

    def purge(self, dlq: str, event_ids: Sequence[str] | None) -> int:
        clause, params = _ids_clause(event_ids)
        with self.conn.transaction(durable=True) as db:
            return db.execute(f"DELETE FROM events WHERE topic=?{clause}", [dlq, *params]).rowcount

    # -- retention ---------------------------------------------------------------------------
    def enforce_retention(self, older_than: float, batch: int = _RETENTION_BATCH) -> int:
        """Delete, per topic, events older than ``older_than`` that every subscription has acked.

        In batches of at most ``batch`` events, each its own short transaction with a pause after it, so
        that a sweep over millions of events never holds the write lock for long: consumers' fetches,
        acks and lease renewals go on between batches. What may go is checked again in every batch (a
        replay between two batches moves a cursor back)."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        deleted = 0
        with self.conn.transaction(write=False) as db:
            # dead-letter topics are kept until purged or redriven
            topics = [t for (t,) in db.execute("SELECT name FROM topics WHERE name NOT LIKE '%.dlq'")]
        for topic in topics:
            after = 0
            while True:
                done, after, gone = self._retention_batch(topic, older_than, after, batch)
                deleted += gone
                if gone:
                    self._checkpoint()
                if done:
                    break
                time.sleep(_RETENTION_PAUSE)
        with self.conn.transaction() as db:
            db.execute("DELETE FROM consumers WHERE seen < ?", (time.time() - 86400,))
        return deleted

    def _checkpoint(self) -> None:
        """Copy the batch just deleted back into the database now (PASSIVE: blocks no reader or writer).
        Left to the checkpoint thread, a sweep's steady writes grow the WAL past its limit, and the
        TRUNCATE checkpoint that then empties it holds every writer while it copies (a million deletes
        measured: WAL 71 MB, a small write waited up to 161 ms; with this: 31 MB, 10 ms)."""
        try:
            with self.conn.lock:
                self.conn.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the checkpoint thread tries again; nothing depends on this one
            log.debug("retention: checkpoint after a batch failed: %s", exc)

    def _retention_batch(self, topic: str, older_than: float, after: int, batch: int) -> tuple[bool, int, int]:
        """One batch: the next ``batch`` events of ``topic`` after position ``after`` that every subscription
        acked; deletes the old ones among them. Returns (done, last position looked at, deleted)."""
        with self.conn.transaction() as db:
            # everything at or below the lowest cursor with no delivery row is acked by everyone
            # (min over each subscription's own index range: no scan of the deliveries table)
            floor = db.execute(
                "SELECT min(p) FROM (SELECT cursor AS p FROM subscriptions WHERE topic=?1 "
                "UNION ALL SELECT (SELECT min(d.seq) FROM deliveries d WHERE d.sub=s.id) - 1 "
                "FROM subscriptions s WHERE s.topic=?1)", (topic,)).fetchone()[0]
            window = db.execute(
                "SELECT seq, published_at < ? FROM events WHERE topic=? AND seq > ? AND (? IS NULL OR seq <= ?) "
                "ORDER BY seq LIMIT ?", (older_than, topic, after, floor, floor, batch)).fetchall()
            if not any(old for _, old in window):
                # nothing old in the next batch: what follows was appended later still (positions
                # follow append time), so this sweep is done with the topic
                return True, after, 0
            last = window[-1][0]
            # events still dead-lettered by a subscription stay, so that a redrive can find them
            dead = [dlq_topic(topic, name) for (name,) in db.execute(
                "SELECT name FROM subscriptions WHERE topic=?", (topic,))]
            gone: int = db.execute(
                "DELETE FROM events WHERE topic=? AND seq > ? AND seq <= ? AND published_at < ? "
                f"AND id NOT IN (SELECT id FROM events WHERE topic IN ({','.join('?' * len(dead))}))",
                (topic, after, last, older_than, *dead)).rowcount
        return len(window) < batch, last, gone
