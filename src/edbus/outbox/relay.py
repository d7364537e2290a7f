"""The relay: moves outbox rows to the bus in commit order per key.

Each step reads the oldest pending rows (``sent_at IS NULL ORDER BY seq``) — never "seq > last sent",
because a transaction that got a lower ``seq`` can commit after one with a higher ``seq`` and would be
skipped — publishes them with their ids (``publish_encoded``: one bus transaction per run of a topic),
then marks exactly those ``seq`` values sent. A crash between publish and mark re-sends the same ids,
which the embedded store stores once (on Pulsar they are stored again and consumers dedupe them; why
the relay gives no ``sequence``: docs/outbox.md). Rows of one key are written by transactions that
serialise on the business row, so their ``seq`` order is their commit order, and a batch is published
in ``seq`` order.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Sequence

import sqlalchemy as sa

from edbus.backends.base import Record
from edbus.bus.bus import Bus
from edbus.errors import ConfigError, redact
from edbus.outbox.lease import Lease
from edbus.outbox.tables import outbox, record_from_row

__all__ = ["Relay", "RelayStats", "outbox_status"]

log = logging.getLogger("edbus.outbox.relay")


@dataclasses.dataclass(frozen=True, slots=True)
class RelayStats:
    pending: int  # rows not yet published
    oldest_pending_age: float | None  # seconds since the oldest pending row was written
    sent: int  # published rows kept until purged


def outbox_status(engine: sa.Engine) -> RelayStats:
    """Depth and age of the outbox: alert when ``oldest_pending_age`` grows (the relay is down or stuck)."""
    with engine.connect() as conn:
        pending, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(outbox.c.created_at))
                                       .where(outbox.c.sent_at.is_(None))).one()
        sent = conn.execute(sa.select(sa.func.count()).where(outbox.c.sent_at.is_not(None))).scalar_one()
    return RelayStats(int(pending), None if oldest is None else max(0.0, time.time() - oldest), int(sent))


class Relay:
    """``Relay(engine, bus).run()`` until ``stop()``. One active relay per shard (a lease); run a standby
    anywhere: it takes over within ``lease_ttl`` of the active one dying.

    ``shards`` > 1 splits the outbox by key: shard ``shard`` (0 … shards-1) relays the rows whose key
    bucket modulo ``shards`` is ``shard``; every relay of one outbox must use the same ``shards``.
    """

    def __init__(self, engine: sa.Engine, bus: Bus, *, shard: int = 0, shards: int = 1, name: str | None = None,
                 batch: int = 1000, poll: float = 0.05, lease_ttl: float = 10.0, keep_sent: float = 3600.0,
                 max_backoff: float = 5.0) -> None:
        self.engine = engine
        self.bus = bus
        self.batch = batch
        self.poll = poll
        self.keep_sent = keep_sent
        self.max_backoff = max_backoff
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        if not 0 <= shard < shards:
            raise ConfigError(f"shard must be in 0…{shards - 1}, not {shard}")
        self.shard, self.shards = shard, shards
        self.lease = Lease(engine, f"{shard}/{shards}", self.name, lease_ttl)
        self.sent = 0
        self.failures = 0  # consecutive failed publishes
        self._stop = threading.Event()
        self._renewed = 0.0
        self._purged = 0.0

    def stop(self) -> None:
        self._stop.set()

    def step(self) -> int:
        """Publish one batch if this relay holds the lease; the number of rows published."""
        now = time.monotonic()
        if not self.lease.held or now - self._renewed > self.lease.ttl / 3:
            if not self.lease.acquire():
                return 0
            self._renewed = now
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(outbox.c.seq, outbox.c.event_id, outbox.c.topic, outbox.c.type,
                                          outbox.c.key, outbox.c.headers, outbox.c.payload)
                                .where(outbox.c.sent_at.is_(None))
                                .where(outbox.c.bucket % self.shards == self.shard if self.shards > 1 else sa.true())
                                .order_by(outbox.c.seq).limit(self.batch)).mappings().all()
        if not rows:
            return 0
        prefix = self.bus.topic_prefix
        for topic, records in _runs(rows):  # rows hold full topic names; publish_encoded adds the prefix
            self.bus.publish_encoded(topic[len(prefix):] if prefix and topic.startswith(prefix) else topic, records)
        seqs = [r["seq"] for r in rows]
        with self.engine.begin() as conn:
            conn.execute(sa.update(outbox).where(outbox.c.seq.in_(seqs)).values(sent_at=time.time()))
        self.sent += len(rows)
        return len(rows)

    def purge(self) -> int:
        """Delete rows sent more than ``keep_sent`` seconds ago."""
        with self.engine.begin() as conn:
            cur = conn.execute(sa.delete(outbox).where(outbox.c.sent_at.is_not(None))
                               .where(outbox.c.sent_at < time.time() - self.keep_sent))
        return int(cur.rowcount or 0)

    def run(self, *, until_idle: bool = False) -> None:
        """Loop until ``stop()`` (or, with ``until_idle``, until no row is pending). While the bus or the
        database is down, retries with exponential backoff (up to ``max_backoff`` s) and then catches up."""
        try:
            while not self._stop.is_set():
                try:
                    n = self.step()
                    if self.failures:
                        log.warning("edbus outbox relay %s: publishing again after %d failure(s)",
                                    self.name, self.failures)
                    self.failures = 0
                    if time.monotonic() - self._purged > 60.0:
                        self.purge()
                        self._purged = time.monotonic()
                except Exception as exc:
                    self.failures += 1
                    delay = min(self.max_backoff, self.poll * 2 ** min(self.failures, 20)) * random.uniform(0.5, 1)
                    log.warning("edbus outbox relay %s: %s: %s; retrying in %.2fs", self.name,
                                type(exc).__name__, redact(str(exc)), delay)
                    self._stop.wait(delay)
                    continue
                if n < self.batch:
                    if until_idle and n == 0 and self.lease.held:
                        return
                    self._stop.wait(self.poll if n == 0 else 0)
        finally:
            try:
                self.lease.release()
            except Exception:
                log.exception("edbus outbox relay %s: releasing the lease failed (it expires by itself)", self.name)


def _runs(rows: Sequence[sa.RowMapping]) -> list[tuple[str, list[Record]]]:
    """Consecutive rows of one topic, in seq order."""
    runs: list[tuple[str, list[Record]]] = []
    for row in rows:
        if not runs or runs[-1][0] != row["topic"]:
            runs.append((row["topic"], []))
        runs[-1][1].append(record_from_row(row))
    return runs
