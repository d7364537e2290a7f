"""The producer side: one producer per topic and process, broker-acked sends (durable with
``journalSyncData``), broker deduplication of resent sequence ids, and in-process dedupe of event ids
appended recently. An unreachable broker is retried with exponential backoff until
``publish_timeout``, then ``StoreUnavailableError``.

Appends to one topic take turns (a lock per topic): sequence ids are given in the order they are sent,
and a later append stored before an earlier one's resend would make the broker drop that resend as a
duplicate (a loss), so an append keeps its topic's turn through its retries. Other topics do not wait,
and the deadline counts from the call: an append still waiting for its turn at ``publish_timeout`` fails
then (nothing of it stored), so N threads publishing to an unreachable broker each fail after about
``publish_timeout``, not N times that.

A producer re-created after a failure keeps its name (one per process and topic), and an append resends
its unacknowledged rest with the sequence ids it first gave them: the broker's deduplication (per producer
name, highest sequence id persisted) then drops a message it had persisted although its receipt was lost.
With a new name and new ids it would store it a second time.

Across processes the same holds for a *named* producer (URL ``producer=``) whose records carry their own
``sequence``: the process that replaces a dead one takes its name, and a publish it retries with the
first attempt's sequence is dropped by the broker if that attempt was stored (its sequence is at or below
the highest the broker persisted for the name). Sequences must therefore grow with every new event of
the name; a sequence that does not grow within a process is refused (``ValidationError``)."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from edbus.backends.base import Record
from edbus.backends.pulsar.backoff import Backoff
from edbus.backends.pulsar.connection import ClientHolder, pulsar_errors
from edbus.backends.pulsar.messages import properties
from edbus.errors import StoreUnavailableError, ValidationError

__all__ = ["Producers", "RecentIds"]

_RECENT = 50_000  # event ids remembered per topic (at least; twice as many at most) for dedupe of retried appends
_ANSWER_TIMEOUT = 120.0  # seconds to wait for the client's answers to a batch of sends

log = logging.getLogger("edbus.backends.pulsar")


def _position(msg_id: Any) -> tuple[int, int] | None:
    try:
        return msg_id.ledger_id(), msg_id.entry_id()
    except BaseException as exc:  # PulsarException may be a BaseException
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return None


def _message(builder_class: Any, record: Record, props: dict[str, str], after: Any, sequence_id: int) -> Any:
    """The client's C++ message for a record (``builder_class``: ``_pulsar.MessageBuilder``), each field
    set by one call: pulsar-client's Python ``send_async`` checks ten argument types and sets each of the
    ~15 properties by a call of its own."""
    builder = builder_class()
    builder.content(record.payload)
    builder.properties(props)
    builder.sequence_id(sequence_id)
    if record.key:
        builder.partition_key(record.key)
    if after is not None:
        builder.deliver_after(after)
    return builder.build()


class RecentIds:
    """The ids appended lately to one topic, with their payloads' digests: the last ``size`` at least,
    2 * ``size`` at most, in two generations: the older is dropped whole when the newer is full, so
    nothing is evicted id by id (an ordered dict trimmed per id cost more than the rest of the dedupe)."""

    __slots__ = ("_new", "_old", "_size")

    def __init__(self, size: int = _RECENT) -> None:
        self._new: dict[str, int] = {}
        self._old: dict[str, int] = {}
        self._size = size

    def get(self, event_id: str) -> int | None:
        found = self._new.get(event_id)
        return self._old.get(event_id) if found is None else found

    def none_of(self, event_ids: Sequence[str]) -> bool:
        return self._new.keys().isdisjoint(event_ids) and self._old.keys().isdisjoint(event_ids)

    def add(self, event_ids: Sequence[str], digests: Sequence[int]) -> None:
        self._new.update(zip(event_ids, digests, strict=True))
        if len(self._new) >= self._size:
            self._old, self._new = self._new, {}


class Producers:
    def __init__(self, holder: ClientHolder, publish_timeout: float, name: str = "") -> None:
        self.holder = holder
        self.publish_timeout = publish_timeout
        self.name = name  # the configured producer name ("": one of this process's own)
        self._producers: dict[str, Any] = {}
        self._names: dict[str, str] = {}  # per topic: the producer name, kept across re-creations
        self._next_sequence: dict[str, int] = {}  # per topic: the next sequence id to give
        self._highest: dict[str, int] = {}  # per topic: the highest sequence id this process gave
        # per topic: event id -> sequence id of what the last failed append left unconfirmed (a retry of
        # it may reuse them until an append succeeds: after that a later sequence may be stored)
        self._unconfirmed: dict[str, dict[str, int]] = {}
        self._recent: dict[str, RecentIds] = {}
        self._turns: dict[str, threading.Lock] = {}  # per topic: whose append it is (held through its retries)
        self._meta = threading.Lock()  # guards the dicts' per-process reset and _turns; never held across I/O
        self._pid = os.getpid()
        # (ledger, entry) of the last message this process appended to each topic: a fetch in this process
        # waits for it a little longer (so a fetch right after an append sees all of it)
        self.last_sent: dict[str, tuple[int, int]] = {}

    def _turn(self, full_topic: str) -> threading.Lock:
        """The topic's lock; in a forked child, first forget the parent's producers and locks (a lock a
        parent's thread held at the fork stays held in the child)."""
        with self._meta:
            if self._pid != os.getpid():
                self._reset()
                self._turns.clear()
                self._pid = os.getpid()
            found = self._turns.get(full_topic)
            if found is None:
                found = self._turns[full_topic] = threading.Lock()
            return found

    def _reset(self) -> None:
        self._producers.clear()
        self._names.clear()
        self._next_sequence.clear()
        self._highest.clear()
        self._unconfirmed.clear()
        self._recent.clear()
        self.last_sent.clear()

    def _producer(self, full_topic: str, named: bool = True) -> Any:
        producer = self._producers.get(full_topic)
        if producer is None:
            import pulsar

            client = self.holder.get()
            name = self._names.setdefault(full_topic, self.name if named and self.name
                                          else f"edbus-{os.getpid()}-{uuid.uuid4().hex[:12]}")
            with pulsar_errors(f"producer for {full_topic}", self.holder.role):
                try:
                    # batching off: a plain batch holds several keys and would defeat Key_Shared's spread
                    producer = client.create_producer(
                        full_topic, producer_name=name, batching_enabled=False, block_if_queue_full=True,
                        send_timeout_millis=int(max(1.0, min(self.publish_timeout, 30.0)) * 1000))
                except pulsar.ProducerBusy:
                    # the broker has not yet dropped this name's previous producer (or another live
                    # process uses the name): retried with backoff until publish_timeout
                    raise StoreUnavailableError(
                        f"producer for {full_topic}: the name {name!r} is held by another connection "
                        "(a process that just died, or one that uses it too)") from None
            # the broker's highest sequence id of this name (-1: none): new ids must be above it
            last = producer.last_sequence_id()
            self._next_sequence[full_topic] = max(self._next_sequence.get(full_topic, 0), last + 1)
            self._producers[full_topic] = producer
        return producer

    def _sequence_ids(self, full_topic: str, records: Sequence[Record], label: str) -> list[int]:
        """The records' sequence ids (the topic's producer must exist): their own ``sequence``, or the
        producer's next. A given one must be above every one given before in this process, or be the
        retry of what the last, failed append left unconfirmed (same id and sequence): the broker drops
        a sequence at or below the highest it has of the name as a duplicate, so a lower one given to a
        new event, or a retry made after later events were stored, could lose it."""
        if all(r.sequence is None for r in records):  # the common case, in one step
            first = self._next_sequence[full_topic]
            out = list(range(first, first + len(records)))
        else:
            nxt, out = self._next_sequence[full_topic], []
            highest = self._highest.get(full_topic, -1)
            unconfirmed = self._unconfirmed.get(full_topic, {})
            for r in records:
                s = nxt if r.sequence is None else r.sequence
                if s <= highest and unconfirmed.get(r.id) != s:
                    raise ValidationError(
                        f"event {r.id!r}: sequence {s} of producer {self._names[full_topic]!r} on {label!r} is not "
                        f"above {highest}, given before in this process: nothing of this publish was stored "
                        "(sequences grow with every new event; retry a failed publish before publishing others)")
                out.append(s)
                highest, nxt = max(highest, s), max(nxt, s + 1)
        if out:
            top = max(out)
            self._next_sequence[full_topic] = max(self._next_sequence[full_topic], top + 1)
            self._highest[full_topic] = max(self._highest.get(full_topic, -1), top)
        return out

    def _drop(self, full_topic: str) -> None:
        producer = self._producers.pop(full_topic, None)
        if producer is not None:
            with contextlib.suppress(BaseException):
                producer.close()

    def _not_recently_appended(self, full_topic: str, records: Sequence[Record],
                               label: str) -> tuple[list[Record], list[int]]:
        """Records whose id was not appended here recently, with their payload digests (an id repeated
        with another payload is refused: it would lose an event)."""
        recent = self._recent_ids(full_topic)
        # digests are compared in this process only: a 64-bit hash (~0.1 µs, blake2b ~1 µs)
        ids = [r.id for r in records]
        if recent.none_of(ids) and len(set(ids)) == len(ids):  # no id seen before: one step
            return list(records), [hash(r.payload) for r in records]
        out: list[Record] = []
        digests: list[int] = []
        seen: dict[str, int] = {}
        for r in records:
            digest = hash(r.payload)
            known = recent.get(r.id)
            if known is None:
                known = seen.get(r.id)
            if known is not None:
                if known != digest:
                    raise ValidationError(f"event id {r.id!r} is already in topic {label!r} with "
                                          "another payload: nothing of this publish was stored")
                continue
            seen[r.id] = digest
            out.append(r)
            digests.append(digest)
        return out, digests

    def _remember(self, full_topic: str, records: Sequence[Record], digests: Sequence[int]) -> None:
        self._recent_ids(full_topic).add([r.id for r in records], digests)

    def _recent_ids(self, full_topic: str) -> RecentIds:
        found = self._recent.get(full_topic)
        if found is None:
            found = self._recent[full_topic] = RecentIds()
        return found

    def append(self, full_topic: str, records: Sequence[Record], *, dedupe: bool = True,
               headers: Sequence[dict[str, str]] | None = None, deliver_after: float | None = None,
               label: str = "") -> None:
        """``label``: the topic's name in errors (edbus's, not Pulsar's). ``dedupe`` off (the backend's
        own writes: dead letters, redrives, which several processes make at once): no event-id dedupe, and
        a producer name of this process's own, never the configured one."""
        started = time.monotonic()
        turn = self._turn(full_topic)
        if not turn.acquire(timeout=self.publish_timeout):
            raise StoreUnavailableError(
                f"publish to {label or full_topic}: another publish to the topic has been retrying for "
                f"{self.publish_timeout:g}s (Pulsar broker at {self.holder.config.service_url} unreachable?): "
                f"0 of {len(records)} events stored")
        try:
            self._append(full_topic, records, dedupe, headers, deliver_after, label,
                         Backoff(self.publish_timeout - (time.monotonic() - started)))
        finally:
            turn.release()

    def _append(self, full_topic: str, records: Sequence[Record], dedupe: bool,
                headers: Sequence[dict[str, str]] | None, deliver_after: float | None, label: str,
                backoff: Backoff) -> None:
        if dedupe:
            todo, digests = self._not_recently_appended(full_topic, records, label or full_topic)
        else:
            todo, digests = list(records), []
        props = list(headers) if headers is not None else [properties(r) for r in todo]
        sent = 0
        sequence: list[int] = []  # given once: a resend after a failure reuses them (broker dedupe)
        # the broker drops a duplicate only on a resend, or for a named producer's retry: only then
        # are the receipts of the batch looked at (two calls into the client per event)
        resend = dedupe and bool(self.name)
        try:
            while sent < len(todo):
                try:
                    producer = self._producer(full_topic, named=dedupe)
                    sequence = sequence or self._sequence_ids(full_topic, todo, label or full_topic)
                    done, last, dropped = self._send(producer, todo[sent:], props[sent:], sequence[sent:],
                                                     deliver_after, resend)
                    sent += done
                    if last is not None and last[0] >= 0:  # (-1, -1): a duplicate the broker dropped
                        self.last_sent[full_topic] = last
                    if dropped:
                        log.info("edbus: %d event(s) published to %s were stored before (producer %r, by "
                                 "an earlier attempt): not stored again", dropped, label or full_topic,
                                 self._names.get(full_topic))
                except StoreUnavailableError as exc:
                    self._drop(full_topic)
                    resend = True
                    if not backoff.sleep():
                        raise StoreUnavailableError(
                            f"Pulsar broker at {self.holder.config.service_url} unreachable for "
                            f"{self.publish_timeout:g}s: {sent} of {len(todo)} events stored ({exc})") from None
        except BaseException:
            if dedupe and sequence:  # what was stored is known; the rest may be retried with its sequences
                self._remember(full_topic, todo[:sent], digests[:sent])
                self._unconfirmed[full_topic] = dict(zip((r.id for r in todo[sent:]), sequence[sent:],
                                                         strict=True))
            raise
        if dedupe:
            self._remember(full_topic, todo, digests)
            self._unconfirmed.pop(full_topic, None)

    def _send(self, producer: Any, records: Sequence[Record], props: Sequence[dict[str, str]],
              sequence: Sequence[int], deliver_after: float | None,
              count_dropped: bool = True) -> tuple[int, tuple[int, int] | None, int]:
        """Send in order; returns how many were acked by the broker before a failure (or all), the
        (ledger, entry) of the last of them, and how many of them it dropped as duplicates (0 unless
        ``count_dropped``)."""
        import datetime as dt

        import _pulsar

        builder = _pulsar.MessageBuilder
        after = dt.timedelta(seconds=deliver_after) if deliver_after else None
        native = getattr(producer, "_producer", None)  # pulsar-client's (3.5 to 3.13) C++ producer, under its wrapper
        if len(records) == 1:
            r = records[0]
            with pulsar_errors(f"publish to {producer.topic()}", self.holder.role):
                if native is not None:
                    sent = native.send(_message(builder, r, props[0], after, sequence[0]))
                else:
                    sent = producer.send(r.payload, properties=props[0], partition_key=r.key, deliver_after=after,
                                         sequence_id=sequence[0])
            at = (sent.ledger_id(), sent.entry_id())
            return 1, at, int(at[0] < 0)
        n = len(records)
        results: list[Any] = [None] * n
        ids: list[Any] = [None] * n
        answered = itertools.count(1)  # next() is atomic under the GIL: a countdown without a lock
        all_answered = threading.Event()

        def on_sent(i: int, result: Any, msg_id: Any) -> None:
            # never raise here: the client's thread would swallow it or abort
            results[i], ids[i] = result, msg_id
            if next(answered) == n:
                all_answered.set()

        with pulsar_errors(f"publish to {producer.topic()}", self.holder.role):
            for i, r in enumerate(records):
                if native is not None:
                    native.send_async(_message(builder, r, props[i], after, sequence[i]),
                                      functools.partial(on_sent, i))
                else:
                    producer.send_async(r.payload, functools.partial(on_sent, i), properties=props[i],
                                        partition_key=r.key, deliver_after=after, sequence_id=sequence[i])
            producer.flush()
        # the client answers every send by its send timeout (at most 30 s); past that, the outcome is unknown
        if not all_answered.wait(_ANSWER_TIMEOUT):
            raise StoreUnavailableError(f"publish to {producer.topic()}: no answer from the client in "
                                        f"{_ANSWER_TIMEOUT:g}s")
        import pulsar

        done_count = len(records)
        for i, result in enumerate(results):
            if result != pulsar.Result.Ok:
                if i == 0:
                    raise StoreUnavailableError(f"publish to {producer.topic()}: {result}")
                done_count = i
                break
        if not count_dropped:
            return done_count, _position(ids[done_count - 1]), 0
        positions = [_position(m) for m in ids[:done_count]]
        dropped = sum(1 for p in positions if p is not None and p[0] < 0)
        return done_count, positions[-1], dropped

    def close(self) -> None:
        with self._meta:
            if self._pid == os.getpid():
                for topic in list(self._producers):
                    self._drop(topic)
            self._reset()  # built on the client being closed
