"""The producer side: one producer per topic and process, broker-acked sends (durable with
``journalSyncData``), broker deduplication of resent sequence ids, and in-process dedupe of event ids
appended recently. An unreachable broker is retried with exponential backoff until
``publish_timeout``, then ``StoreUnavailableError``.

A producer re-created after a failure keeps its name (one per process and topic), and an append resends
its unacknowledged rest with the sequence ids it first gave them: the broker's deduplication (per producer
name, highest sequence id persisted) then drops a message it had persisted although its receipt was lost.
With a new name and new ids it would store it a second time."""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from edbus.backends.base import Record
from edbus.backends.pulsar.connection import ClientHolder, pulsar_errors
from edbus.backends.pulsar.messages import properties
from edbus.errors import StoreUnavailableError, ValidationError

__all__ = ["Producers"]

_RECENT = 100_000  # event ids remembered per topic for dedupe of retried appends in this process


def _position(msg_id: Any) -> tuple[int, int] | None:
    try:
        return msg_id.ledger_id(), msg_id.entry_id()
    except BaseException as exc:  # PulsarException may be a BaseException
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return None


def _message(record: Record, props: dict[str, str], after: Any, sequence_id: int) -> Any:
    """The client's C++ message for a record, each field set by one call: pulsar-client's Python
    ``send_async`` checks ten argument types and sets each of the ~15 properties by a call of its own."""
    import _pulsar

    builder = _pulsar.MessageBuilder()
    builder.content(record.payload)
    builder.properties(props)
    builder.sequence_id(sequence_id)
    if record.key:
        builder.partition_key(record.key)
    if after is not None:
        builder.deliver_after(after)
    return builder.build()


class Producers:
    def __init__(self, holder: ClientHolder, publish_timeout: float) -> None:
        self.holder = holder
        self.publish_timeout = publish_timeout
        self._producers: dict[str, Any] = {}
        self._names: dict[str, str] = {}  # per topic: the producer name, kept across re-creations
        self._next_sequence: dict[str, int] = {}  # per topic: the next sequence id to give
        self._recent: dict[str, collections.OrderedDict[str, int]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # (ledger, entry) of the last message this process appended to each topic: a fetch in this process
        # waits for it a little longer (so a fetch right after an append sees all of it)
        self.last_sent: dict[str, tuple[int, int]] = {}

    def _producer(self, full_topic: str) -> Any:
        if self._pid != os.getpid() or self.holder.fresh:
            self._producers.clear()  # built on another process's client
            self._names.clear()
            self._next_sequence.clear()
            self._recent.clear()
            self.last_sent.clear()
            self._pid = os.getpid()
        producer = self._producers.get(full_topic)
        if producer is None:
            import pulsar

            client = self.holder.get()
            name = self._names.setdefault(full_topic, f"edbus-{os.getpid()}-{uuid.uuid4().hex[:12]}")
            with pulsar_errors(f"producer for {full_topic}"):
                try:
                    # batching off: a plain batch holds several keys and would defeat Key_Shared's spread
                    producer = client.create_producer(
                        full_topic, producer_name=name, batching_enabled=False, block_if_queue_full=True,
                        send_timeout_millis=int(max(1.0, min(self.publish_timeout, 30.0)) * 1000))
                except pulsar.ProducerBusy:
                    # the broker has not yet dropped this name's previous producer: retried with backoff
                    raise StoreUnavailableError(f"producer for {full_topic}: {name} still open on the broker") from None
            # the broker's highest sequence id of this name (-1: none): new ids must be above it
            last = producer.last_sequence_id()
            self._next_sequence[full_topic] = max(self._next_sequence.get(full_topic, 0), last + 1)
            self._producers[full_topic] = producer
        return producer

    def _sequence_ids(self, full_topic: str, n: int) -> list[int]:
        """``n`` new sequence ids of the topic's producer (which must exist), in order."""
        first = self._next_sequence[full_topic]
        self._next_sequence[full_topic] = first + n
        return list(range(first, first + n))

    def _drop(self, full_topic: str) -> None:
        producer = self._producers.pop(full_topic, None)
        if producer is not None:
            with contextlib.suppress(BaseException):
                producer.close()

    def _fresh(self, full_topic: str, records: Sequence[Record], label: str) -> tuple[list[Record], list[int]]:
        """Records whose id was not appended here recently, with their payload digests (an id repeated
        with another payload is refused: it would lose an event)."""
        recent = self._recent.setdefault(full_topic, collections.OrderedDict())
        out: list[Record] = []
        digests: list[int] = []
        seen: dict[str, int] = {}
        for r in records:
            digest = hash(r.payload)  # compared in this process only: a 64-bit hash (~0.1 µs, blake2b ~1 µs)
            known = recent.get(r.id, seen.get(r.id))
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
        recent = self._recent.setdefault(full_topic, collections.OrderedDict())
        for r, digest in zip(records, digests, strict=True):
            recent[r.id] = digest
        while len(recent) > _RECENT:
            recent.popitem(last=False)

    def append(self, full_topic: str, records: Sequence[Record], *, dedupe: bool = True,
               headers: Sequence[dict[str, str]] | None = None, deliver_after: float | None = None,
               label: str = "") -> None:
        """``label``: the topic's name in errors (edbus's, not Pulsar's)."""
        with self._lock:
            if dedupe:
                todo, digests = self._fresh(full_topic, records, label or full_topic)
            else:
                todo, digests = list(records), []
            props = list(headers) if headers is not None else [properties(r) for r in todo]
            deadline = time.monotonic() + self.publish_timeout
            delay = 0.05
            sent = 0
            sequence: list[int] = []  # given once: a resend after a failure reuses them (broker dedupe)
            while sent < len(todo):
                try:
                    producer = self._producer(full_topic)
                    sequence = sequence or self._sequence_ids(full_topic, len(todo))
                    done, last = self._send(producer, todo[sent:], props[sent:], sequence[sent:], deliver_after)
                    sent += done
                    if last is not None and last[0] >= 0:  # (-1, -1): a duplicate the broker dropped
                        self.last_sent[full_topic] = last
                except StoreUnavailableError as exc:
                    self._drop(full_topic)
                    if time.monotonic() + delay > deadline:
                        raise StoreUnavailableError(
                            f"Pulsar broker at {self.holder.config.service_url} unreachable for "
                            f"{self.publish_timeout:g}s: {sent} of {len(todo)} events stored ({exc})") from None
                    time.sleep(delay)  # backoff before the next attempt, not synchronisation
                    delay = min(delay * 2, 2.0)
            if dedupe:
                self._remember(full_topic, todo, digests)

    def _send(self, producer: Any, records: Sequence[Record], props: Sequence[dict[str, str]],
              sequence: Sequence[int], deliver_after: float | None) -> tuple[int, tuple[int, int] | None]:
        """Send in order; returns how many were acked by the broker before a failure (or all), and the
        (ledger, entry) of the last of them."""
        import datetime as dt

        after = dt.timedelta(seconds=deliver_after) if deliver_after else None
        native = getattr(producer, "_producer", None)  # pulsar-client's (3.5 to 3.13) C++ producer, under its wrapper
        if len(records) == 1:
            r = records[0]
            with pulsar_errors(f"publish to {producer.topic()}"):
                if native is not None:
                    sent = native.send(_message(r, props[0], after, sequence[0]))
                else:
                    sent = producer.send(r.payload, properties=props[0], partition_key=r.key, deliver_after=after,
                                         sequence_id=sequence[0])
            return 1, (sent.ledger_id(), sent.entry_id())
        results: list[Any] = [None] * len(records)
        ids: list[Any] = [None] * len(records)
        done = threading.Semaphore(0)

        def callback(i: int) -> Any:
            def on_sent(result: Any, msg_id: Any) -> None:
                # never raise here: the client's thread would swallow it or abort
                results[i], ids[i] = result, msg_id
                done.release()
            return on_sent

        with pulsar_errors(f"publish to {producer.topic()}"):
            for i, r in enumerate(records):
                if native is not None:
                    native.send_async(_message(r, props[i], after, sequence[i]), callback(i))
                else:
                    producer.send_async(r.payload, callback(i), properties=props[i], partition_key=r.key,
                                        deliver_after=after, sequence_id=sequence[i])
            producer.flush()
        for _ in records:
            done.acquire()
        import pulsar

        for i, result in enumerate(results):
            if result != pulsar.Result.Ok:
                if i == 0:
                    raise StoreUnavailableError(f"publish to {producer.topic()}: {result}")
                return i, _position(ids[i - 1])
        return len(records), _position(ids[-1])

    def close(self) -> None:
        if self._pid == os.getpid():
            for topic in list(self._producers):
                self._drop(topic)
        self._producers.clear()
