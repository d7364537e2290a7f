"""The attempt ledger of a Pulsar subscription: which messages its consumers handed to handlers, durably,
so that a message whose consumer died holding it is known as such by the next one.

Why not the broker's redelivery count: it stays 0 when a consumer dies, and on Exclusive subscriptions
(apache/pulsar #8722, #18239, #15836), so a message that kills its process would come back forever, new
each time. ``Delivery.abandoned`` (and the runtime's poison rule) needs the count on every backend.

The ledger is the topic ``<topic>.<subscription>.attempts``, compacted (only the latest value of each key
is kept; an empty value deletes the key). One message per lease batch (one ``fetch``), keyed
``<holder>:<n>`` (holder: the Pulsar consumer's name, one per subscription and process), its value the
state of each message leased: ``{"e": {position: [started, ledger, entry, retry, history]}}`` — attempts
started so far on any consumer, where the message is (for the sweep), and the failed attempts' errors
(the first and the latest ones, with a ``base.HISTORY_TRIMMED`` entry counting those between).
It is written and flushed before the batch goes to handlers. A message's state is, among the live
records naming it, the one with the most attempts started; ``started - base.failures(history)`` of them ended
with no outcome (abandoned). A holder rewrites its record when a lease is released or fails (deferred until
the next write or ``flush``) and deletes it once every message in it is acked or dead-lettered; a
graceful close releases its leases and writes what is left (the errors of pending retries, for the next
holder). A dead holder's records stay until a sweep (at a ledger's opening, then every ``_SWEEP_EVERY``
seconds while there are others' records) deletes those whose messages the subscription has all acked.

Every consumer reads the whole ledger (a reader from the earliest, compacted view) and, before it looks a
message up, reads to the ledger's end: the broker redelivers a message only after its previous holder is
gone, and that holder wrote its record before handling it, so the record is in the ledger by then.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from edbus.backends.base import ErrorInfo
from edbus.backends.pulsar.admin import Admin
from edbus.backends.pulsar.connection import pulsar_errors
from edbus.errors import AccessError, NotFoundError, StoreError

__all__ = ["AttemptLedger", "Attempts", "attempts_topic", "delete_ledger"]

log = logging.getLogger("edbus.backends.pulsar")

COMPACTION_THRESHOLD = 1 << 20  # bytes of ledger not yet compacted before the broker compacts it
_SWEEP_EVERY = 60.0  # seconds between sweeps of dead holders' records
_WRITE_TIMEOUT = 10.0  # seconds a ledger write may take before a fetch gives up its batch
_MESSAGE_KEEP = 500  # characters of an error message kept in the ledger (tracebacks stay in the process)
_RANGE = re.compile(r"\((\d+):(\d+)\.\.(\d+):(\d+)\]")


def attempts_topic(topic: str, subscription: str) -> str:
    """The ledger of a subscription (subscription names have no dots: one pair per name)."""
    return f"{topic}.{subscription}.attempts"


class Attempts:
    """What the ledger knows of one message: attempts started on any consumer, and the failed ones'
    errors. ``ledger``/``entry``/``retry`` say where the message is, for the sweep."""

    __slots__ = ("entry", "history", "ledger", "retry", "started")

    def __init__(self, started: int, history: tuple[ErrorInfo, ...], ledger: int, entry: int,
                 retry: bool) -> None:
        self.started, self.history = started, history
        self.ledger, self.entry, self.retry = ledger, entry, retry

    def encode(self) -> list[Any]:
        return [self.started, self.ledger, self.entry, int(self.retry),
                [[e.type, e.message[:_MESSAGE_KEEP], e.at, e.attempt] for e in self.history]]

    @classmethod
    def decode(cls, raw: list[Any]) -> Attempts:
        started, ledger, entry, retry, history = raw
        return cls(int(started), tuple(ErrorInfo(str(t), str(m), "", float(at), int(n)) for t, m, at, n in history),
                   int(ledger), int(entry), bool(retry))


def _encode(entries: Mapping[str, Attempts]) -> bytes:
    return json.dumps({"e": {p: a.encode() for p, a in entries.items()}}, separators=(",", ":")).encode()


def _decode(data: bytes) -> dict[str, Attempts]:
    return {p: Attempts.decode(raw) for p, raw in json.loads(data)["e"].items()}


class _Cursor:
    """What a subscription has acked on one topic (the admin API's internal stats of its cursor)."""

    def __init__(self, stats: Mapping[str, Any] | None) -> None:
        self.missing = stats is None
        stats = stats or {}
        ledger, _, entry = str(stats.get("markDeletePosition") or "-1:-1").partition(":")
        self.mark = (int(ledger), int(entry))
        self.ranges = [((int(a), int(b)), (int(c), int(d)))
                       for a, b, c, d in _RANGE.findall(str(stats.get("individuallyDeletedMessages") or ""))]

    def acked(self, at: tuple[int, int]) -> bool:
        return self.missing or at <= self.mark or any(low < at <= high for low, high in self.ranges)


class AttemptLedger:
    """One holder's view of a subscription's ledger (thread-safe)."""

    def __init__(self, client: Any, admin: Admin, ledger_topic: str, full_ledger_topic: str, topics: tuple[str, str],
                 subscription: str, holder: str, role: str | None = None) -> None:
        self.admin, self.name, self.subscription, self.holder = admin, ledger_topic, subscription, holder
        self.role = role  # the connection's role, named when the broker refuses it the ledger
        self.topics = topics  # the subscription's topic and its retry topic (admin names)
        self.lock = threading.RLock()
        self._records: dict[str, dict[str, Attempts]] = {}  # others' live records, as read
        self._by_position: dict[str, set[str]] = {}  # position -> keys of others' records naming it
        self._own: dict[str, dict[str, Attempts]] = {}  # this holder's live records: what it last wrote or will
        self._where: dict[str, str] = {}  # position -> the own record holding its latest state
        self._dirty: set[str] = set()  # own records changed since written
        self._count = 0
        self._swept = 0.0
        self.closed = False
        self._client, self._full_topic = client, full_ledger_topic
        self._write_failed = False  # the last write failed: the next one goes through a new producer
        import pulsar

        what = f"attempt ledger {ledger_topic}"
        self._use_producer(self._open_producer())
        try:
            with pulsar_errors(what, role):
                self._reader = client.create_reader(full_ledger_topic, pulsar.MessageId.earliest,
                                                    is_read_compacted=True)
        except BaseException:
            self._producer.close()
            raise
        self._native_reader = getattr(self._reader, "_reader", self._reader)  # skips a wrapper object per read

    @classmethod
    def open(cls, client: Any, admin: Admin, full: Any, topic: str, retry: str, subscription: str,
             holder: str, role: str | None = None) -> AttemptLedger:
        """The ledger of ``subscription`` on ``topic`` (admin names; ``retry``: its retry topic), created
        and made compacted the first time; ``full`` maps an admin name to the client's."""
        name = attempts_topic(topic, subscription)
        admin.create_topic(name)
        try:
            if "__compaction" not in (admin.internal_stats(name).get("cursors") or {}):
                # the compaction threshold (a topic policy) bounds the ledger; a first compaction now creates
                # the compactor's cursor, which keeps what is not compacted yet from being trimmed
                admin.call("POST", admin.topic_path(name) + "/compactionThreshold", COMPACTION_THRESHOLD)
                admin.call("PUT", admin.topic_path(name) + "/compaction")
        except (StoreError, AccessError) as exc:  # topic policies off, or a role that may not: works, grows
            log.warning("edbus: attempt ledger %s: could not set its compaction (%s); set a compaction "
                        "threshold on it or its namespace (docs/poison.md)", name, exc)
        ledger = cls(client, admin, name, full(name), (topic, retry), subscription, holder, role)
        try:
            with ledger.lock:
                ledger._catch_up()
                ledger._try_sweep()
        except BaseException:
            ledger._close_client_objects()
            raise
        return ledger

    def is_retry(self, full_topic: str) -> bool:
        """Whether a message received from ``full_topic`` comes from the subscription's retry topic."""
        return full_topic.endswith("/" + self.topics[1])

    # -- reading -----------------------------------------------------------------------------
    def _catch_up(self) -> None:
        """Read to the ledger's end as the broker knows it now (one round trip when up to date)."""
        reader = self._native_reader
        with pulsar_errors(f"read attempt ledger {self.name}", self.role):
            while reader.has_message_available():
                msg = reader.read_next(int(_WRITE_TIMEOUT * 1000))
                self._apply(msg.partition_key(), bytes(msg.data()))

    def _apply(self, key: str, data: bytes) -> None:
        if key.startswith(self.holder + ":"):
            return  # this holder's own: what it holds in memory is newer
        old = self._records.pop(key, None)
        for position in old or ():
            keys = self._by_position.get(position)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_position[position]
        if not data:
            return  # deleted
        try:
            entries = _decode(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("edbus: unreadable record %r in attempt ledger %s (ignored): %s", key, self.name, exc)
            return
        self._records[key] = entries
        for position in entries:
            self._by_position.setdefault(position, set()).add(key)

    def lookup(self, positions: Iterable[str]) -> dict[str, Attempts]:
        """The ledger's state of these messages (those it names), after reading to its end."""
        with self.lock:
            self._catch_up()
            found: dict[str, Attempts] = {}
            for position in positions:
                best = None
                for key in self._by_position.get(position, ()):
                    a = self._records[key][position]
                    if best is None or a.started > best.started:
                        best = a
                own = self._where.get(position)
                if own is not None:
                    a = self._own[own][position]
                    if best is None or a.started > best.started:
                        best = a
                if best is not None:
                    found[position] = best
            if self._records and time.monotonic() - self._swept > _SWEEP_EVERY:
                self._try_sweep()
            return found

    # -- writing -----------------------------------------------------------------------------
    def _open_producer(self) -> Any:
        with pulsar_errors(f"attempt ledger {self.name}", self.role):
            return self._client.create_producer(self._full_topic, batching_enabled=False, block_if_queue_full=True,
                                                send_timeout_millis=int(_WRITE_TIMEOUT * 1000))

    def _use_producer(self, producer: Any) -> None:
        self._producer = producer
        self._native_producer = getattr(producer, "_producer", None)

    def _replace_failed_producer(self) -> None:
        """After a failed write, write through a new producer (lock held). The failed one may never come
        back by itself soon: after a rolling restart of the bookies one timed out every write for minutes
        while the same process's consumer stayed connected, and its fetches leased nothing all that time
        (a cluster fault run); the client's own reconnection also backs off up to a minute. Raises
        ``StoreError`` while the broker cannot give a new one (the write fails as it would have)."""
        if not self._write_failed:
            return
        old = self._producer
        self._use_producer(self._open_producer())
        self._write_failed = False
        # closing waits for the broker's answer, which a stuck producer may never get: not on this thread
        threading.Thread(target=_close_quietly, args=(old,), name="edbus-ledger-close", daemon=True).start()

    def record(self, entries: Mapping[str, Attempts]) -> None:
        """Record a lease batch (and the changes deferred so far), durably: returns once the broker has them."""
        with self.lock:
            self._count += 1
            key = f"{self.holder}:{self._count}"
            for position in entries:
                self._drop(position, rewrite=False)  # its older entry there is lower: outweighed by this one
            self._own[key] = dict(entries)
            for position in entries:
                self._where[position] = key
            self._dirty.add(key)
            self._write_dirty()

    def change(self, position: str, state: Attempts | None) -> None:
        """A lease released (its state before it; ``None``: none) or failed (with its error): written with
        the next write or ``flush``."""
        with self.lock:
            key = self._where.get(position)
            if key is None:
                return
            if state is None:
                self._drop(position, rewrite=True)
            else:
                self._own[key][position] = state
                self._dirty.add(key)

    def settle(self, positions: Iterable[str]) -> None:
        """Acked or dead-lettered: its record is written again without it (deleted once empty) at once,
        not waited for. The broker gets the client's acks up to 100 ms later (ack grouping): if this
        process dies meanwhile, a message handled and acked here comes again, and the rewrite, sent at
        once, keeps it from counting as abandoned. (The runtime settles a batch in a few calls: about
        1.4 rewrites per batch of 256 in bench/pulsar_vs_raw.py.)"""
        with self.lock:
            for position in positions:
                self._drop(position, rewrite=True)
            if self._dirty and not self.closed:
                try:
                    self._send_dirty()
                except StoreError as exc:  # the acks stand; the rewrite goes with the next write
                    log.debug("edbus: attempt ledger %s: rewrite after acks not sent: %s", self.name, exc)

    def flush(self) -> None:
        """Make the deferred changes durable."""
        with self.lock:
            if self._dirty and not self.closed:
                self._write_dirty()

    def _drop(self, position: str, rewrite: bool) -> None:
        """Take ``position`` out of the own record that holds its state; that record is written again if
        ``rewrite``, or deleted once it holds nothing."""
        key = self._where.pop(position, None)
        if key is None:
            return
        entries = self._own[key]
        entries.pop(position, None)
        if rewrite or not entries:
            self._dirty.add(key)

    def _send_dirty(self) -> tuple[list[threading.Event], list[Any]]:
        """Send every dirty own record (an empty one as a deletion), the newest first (a message moved to
        a newer record is never missing from both); returns what to wait on, and where results go."""
        import _pulsar

        self._replace_failed_producer()
        waits: list[threading.Event] = []
        results: list[Any] = []
        for key in sorted(self._dirty, key=lambda k: -int(k.rpartition(":")[2])):
            entries = self._own[key]
            data = _encode(entries) if entries else b""
            if not entries:
                del self._own[key]
            done = threading.Event()
            waits.append(done)

            def sent(result: Any, _msg_id: Any, done: threading.Event = done) -> None:
                results.append(result)  # never raise here: the client's thread would swallow it or abort
                done.set()

            with pulsar_errors(f"write attempt ledger {self.name}", self.role):
                if self._native_producer is not None:
                    self._native_producer.send_async(
                        _pulsar.MessageBuilder().content(data).partition_key(key).build(), sent)
                else:
                    self._producer.send_async(data, sent, partition_key=key)
        self._dirty.clear()
        return waits, results

    def _write_dirty(self) -> None:
        import pulsar

        try:
            waits, results = self._send_dirty()
            deadline = time.monotonic() + _WRITE_TIMEOUT + 1
            for done in waits:
                if not done.wait(max(0.0, deadline - time.monotonic())):
                    raise StoreError(f"write attempt ledger {self.name}: no answer in {_WRITE_TIMEOUT:.0f} s")
            bad = [r for r in results if r != pulsar.Result.Ok]
            if bad:
                raise StoreError(f"write attempt ledger {self.name}: Pulsar {bad[0]}")
        except StoreError:
            self._write_failed = True  # the next write goes through a new producer
            raise

    # -- sweeping ----------------------------------------------------------------------------
    def _cursors(self) -> tuple[_Cursor, _Cursor]:
        out = []
        for topic in self.topics:
            try:
                cursors = self.admin.internal_stats(topic).get("cursors") or {}
            except NotFoundError:
                cursors = {}
            out.append(_Cursor(cursors.get(self.subscription)))
        return out[0], out[1]

    def _try_sweep(self) -> None:
        """A sweep that fails is logged and tried again ``_SWEEP_EVERY`` later: it is housekeeping."""
        try:
            self._sweep()
        except (StoreError, AccessError) as exc:
            log.warning("edbus: sweep of attempt ledger %s failed (next in %.0f s): %s", self.name, _SWEEP_EVERY, exc)

    def _sweep(self) -> None:
        """Delete others' records whose messages the subscription has all acked (their holders are gone:
        a live holder's record names what it holds, unacked)."""
        self._swept = time.monotonic()
        if not self._records:
            return
        main, retry = self._cursors()
        gone = [key for key, entries in self._records.items()
                if all((retry if a.retry else main).acked((a.ledger, a.entry)) for a in entries.values())]
        if not gone:
            return
        import _pulsar

        def ignore(result: Any, msg_id: Any) -> None:
            pass  # a deletion that does not reach the broker is swept again later

        self._replace_failed_producer()
        with pulsar_errors(f"write attempt ledger {self.name}", self.role):
            for key in gone:
                if self._native_producer is not None:
                    self._native_producer.send_async(
                        _pulsar.MessageBuilder().content(b"").partition_key(key).build(), ignore)
                else:
                    self._producer.send_async(b"", ignore, partition_key=key)
                self._apply(key, b"")
        log.info("edbus: swept %d record(s) of gone consumers from attempt ledger %s", len(gone), self.name)

    # -- closing -----------------------------------------------------------------------------
    def close(self, states: Mapping[str, Attempts | None]) -> None:
        """A graceful close: ``states`` are the held messages' states to leave for the next holder (leases
        released: the state before them); every other message this holder recorded is settled or gone."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            written = False
            try:
                for position in list(self._where):
                    state = states.get(position)
                    if state is None:
                        self._drop(position, rewrite=True)
                    else:
                        self._own[self._where[position]][position] = state
                        self._dirty.add(self._where[position])
                if self._dirty:
                    self._write_dirty()
                written = True
            except (StoreError, AccessError) as exc:
                log.warning("edbus: closing attempt ledger %s: %s (its leases count as abandoned)", self.name, exc)
            finally:
                self._close_client_objects(flush=written)  # the broker did not answer: no second wait

    def _close_client_objects(self, flush: bool = True) -> None:
        if flush:
            with contextlib.suppress(BaseException):
                self._producer.flush()  # the deletions sent without waiting reach the broker before the close
        for thing in (self._reader, self._producer):
            try:
                thing.close()
            except BaseException as exc:  # the client's errors may be BaseExceptions
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise


def _close_quietly(producer: Any) -> None:
    with contextlib.suppress(BaseException):
        producer.close()


def delete_ledger(admin: Admin, topic: str, subscription: str) -> None:
    """Delete a subscription's ledger (when the subscription is deleted); none is fine."""
    with contextlib.suppress(NotFoundError):
        admin.call("DELETE", admin.topic_path(attempts_topic(topic, subscription)) + "?force=true")
