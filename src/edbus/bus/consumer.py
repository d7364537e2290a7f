"""The consumer runtime: leases events from a subscription, runs handlers with bounded concurrency,
applies the middleware's decision (ack, retry later, dead-letter) and stops gracefully.

Threads: the calling thread owns the backend (fetch, ack, nack, dead-letter, lease renewal); a pool of
``concurrency`` workers runs handlers. Events of one key leased together run one after another in one
worker, so per-key order holds inside the process as it does across processes.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from edbus.backends.base import Delivery, ErrorInfo, Mode, StartAt
from edbus.bus.middleware import Ack, DeadLetter, MiddlewareChain, Outcome, Retry
from edbus.errors import ConfigError, DecodeError, NotFoundError
from edbus.events.types import Event, EventType

if TYPE_CHECKING:
    from edbus.bus.bus import Bus

__all__ = ["Consumer", "EventHandler"]

log = logging.getLogger("edbus.consumer")
P = TypeVar("P")
_TRACEBACK_LIMIT = 16_000
_RETENTION_FIRST, _RETENTION_EVERY = 60.0, 600.0  # seconds after start, then between runs


class EventHandler(Protocol):
    """A class-based handler: ``event_type`` and ``handle(event)``."""

    event_type: EventType[Any]

    def handle(self, event: Event[Any]) -> None: ...


class _RunState:
    """What one ``run`` tracks: leased deliveries not yet settled, and when to do periodic work."""

    def __init__(self, lease: float) -> None:
        now = time.monotonic()
        self.in_flight: dict[int, Delivery] = {}
        self.idle_since = now
        self.renew_at = now + lease / 3
        self.retention_at = now + _RETENTION_FIRST
        self.isolating = False  # the last fetch held an event whose previous holder died


class Consumer:
    def __init__(self, bus: Bus, topic: str, subscription: str, *, mode: Mode, start: StartAt,
                 middleware: MiddlewareChain, concurrency: int, lease: float, batch: int,
                 name: str | None) -> None:
        if concurrency < 1 or batch < 1 or lease <= 0:
            raise ConfigError("concurrency and batch must be >= 1 and lease > 0")
        self.bus = bus
        self.backend = bus.backend
        self.topic, self.subscription, self.mode, self.start = topic, subscription, mode, start
        self.middleware = middleware
        self.concurrency, self.lease, self.batch = concurrency, lease, batch
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        self.handlers: dict[str, tuple[EventType[Any], Callable[[Event[Any]], Any]]] = {}
        self.fallback: Callable[[Event[Any]], Any] | None = None
        self.processed = 0
        self._stop = threading.Event()
        self._signalled = False
        self._done: queue.SimpleQueue[tuple[Delivery, Outcome | None]] = queue.SimpleQueue()
        self._wakeup = threading.Event()

    # -- registration ------------------------------------------------------------------------
    def handler(self, event_type: EventType[P]) -> Callable[[Callable[[Event[P]], Any]], Callable[[Event[P]], Any]]:
        """Decorator: ``@consumer.handler(COURSE_CHANGED)``."""
        def register(fn: Callable[[Event[P]], Any]) -> Callable[[Event[P]], Any]:
            self.add(event_type, fn)
            return fn
        return register

    def add(self, event_type: EventType[Any], fn: Callable[[Event[Any]], Any]) -> None:
        if event_type.name in self.handlers:
            raise ConfigError(f"a handler for {event_type.name} is already registered")
        self.handlers[event_type.name] = (event_type, fn)

    def add_fallback(self, fn: Callable[[Event[Any]], Any]) -> None:
        """Handle every event whose type has no handler; ``event.data`` is the Avro data as plain
        dicts (decoded with the writer's schema). Without a fallback such events are acked unhandled."""
        self.fallback = fn

    def add_handler(self, handler: EventHandler) -> None:
        """Register a class-based handler."""
        self.add(handler.event_type, handler.handle)

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called or a stop signal arrived (handlers waiting on something may give up)."""
        return self._stop.is_set() or self._signalled

    def stop(self) -> None:
        """Take no new events; ``run`` returns once in-flight ones are finished and acked."""
        self._stop.set()
        self._wakeup.set()

    # -- processing (worker threads) ---------------------------------------------------------
    def _process(self, delivery: Delivery) -> Outcome:
        record = delivery.message.record
        admitted = self.middleware.admit(delivery)
        if admitted is not None:  # e.g. a delivery that crashed its consumers max_attempts times
            self.middleware.after_process(delivery, None, admitted)
            return admitted
        error: BaseException | None = None
        event: Event[Any] | None = None
        try:
            entry = self.handlers.get(record.type)
            if entry is None and self.fallback is not None:
                envelope, data = self.bus.codec.decode_dict(delivery.message)
                event = Event(envelope, data, record.key, delivery.attempt, delivery.message.topic)
                self.middleware.before_process(delivery, event)
                self.fallback(event)
            elif entry is None:
                # not ours: ack, unless nobody knows this type (then it is bad input)
                text = record.headers.get("ce_schemaversion", "0") or "0"
                try:
                    version = int(text)
                except (ValueError, TypeError):  # as bad as an unknown type: retrying cannot help
                    raise DecodeError(f"bad ce_schemaversion header {str(text)[:40]!r} on {record.type!r}") from None
                try:
                    self.bus.codec.writer_schema(record.type, version)
                except NotFoundError:
                    raise DecodeError(f"unknown event type {record.type!r} (schema version {version})") from None
                self.middleware.before_process(delivery, None)
            else:
                event_type, fn = entry
                envelope, data = self.bus.codec.decode(delivery.message, event_type)
                event = Event(envelope, data, record.key, delivery.attempt, delivery.message.topic)
                self.middleware.before_process(delivery, event)
                fn(event)
        except BaseException as exc:  # SystemExit, CancelledError…: a failure too, never a loop
            error = exc
        info = None if error is None else _error_info(error, delivery.attempt)
        outcome = self.middleware.decide(delivery, error, info)
        self.middleware.after_process(delivery, error, outcome)
        if error is not None and not isinstance(error, DecodeError):
            log.warning("handler failed for %s %s (attempt %d): %s: %s", record.type, record.id,
                        delivery.attempt, type(error).__name__, error)
        return outcome

    def _run_group(self, group: list[Delivery]) -> None:
        """Events of one key, in order; after a failure the rest wait for it (released, not run)."""
        failed = False
        for delivery in group:
            outcome: Outcome | None = None
            if not failed:
                try:
                    outcome = self._process(delivery)
                except BaseException as exc:  # a middleware bug: retry later, counting the attempt
                    log.exception("processing %s crashed", delivery.message.record.id)
                    outcome = Retry(1.0, _error_info(exc, delivery.attempt))
                failed = not isinstance(outcome, Ack)
            self._done.put((delivery, outcome))
        self._wakeup.set()

    # -- the loop (calling thread) -----------------------------------------------------------
    def run(self, *, max_events: int | None = None, idle_timeout: float | None = None,
            install_signals: bool = True) -> int:
        """Consume until ``stop()``, SIGTERM/SIGINT, ``max_events`` processed, or ``idle_timeout`` seconds
        without events. Returns how many events this run processed (acked or dead-lettered);
        ``processed`` counts them over every run."""
        base = self.processed
        # max_events ends this run only: a later run() of this consumer processes up to its own max_events
        target = None if max_events is None else base + max_events
        self.backend.subscribe(self.topic, self.subscription, self.mode, self.start)
        previous = self._install_signals() if install_signals else {}
        state = _RunState(self.lease)
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"edbus-{self.subscription}")
        try:
            while True:
                if self._signalled:
                    self._stop.set()
                progressed = self._settle(state.in_flight) > 0
                finishing = self._stop.is_set() or (target is not None and self.processed >= target)
                if finishing:
                    if not state.in_flight:
                        break
                else:
                    progressed = self._fetch(state, pool, target) or progressed
                self._maintain(state)
                if progressed:
                    state.idle_since = time.monotonic()
                    continue
                if idle_timeout is not None and not state.in_flight \
                        and time.monotonic() - state.idle_since > idle_timeout:
                    break
                if state.in_flight or finishing:
                    self._wakeup.wait(0.01)  # a worker finishing sets it
                    self._wakeup.clear()
                else:
                    self.backend.wait(min(0.25, self.lease / 3))  # an append wakes it
        finally:
            # on a fatal error: run nothing more, settle what ran, release what never started
            pool.shutdown(wait=True, cancel_futures=True)
            try:
                self._settle(state.in_flight)
                for delivery in state.in_flight.values():
                    self.backend.nack(delivery, 0.0, None)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return self.processed - base

    def _fetch(self, state: _RunState, pool: ThreadPoolExecutor, target: int | None) -> bool:
        """Lease more events while fewer than twice the concurrency are in flight (and, with a ``target``
        count of processed events, no more than it needs); False when none came."""
        room = self.concurrency * 2 - len(state.in_flight)
        if room <= 0 or (state.isolating and state.in_flight):
            return False
        limit = min(room, self.batch) if self.mode is Mode.SHARED else self.batch
        if target is not None:
            # what is in flight may already reach the target: leasing more would process past max_events
            limit = min(limit, target - self.processed - len(state.in_flight))
            if limit <= 0:
                return False
        if state.isolating:
            limit = 1
        fetched = self._isolate(self.backend.fetch(self.topic, self.subscription, self.name, limit,
                                                   self.lease), state)
        for group in self._groups(fetched):
            for d in group:
                state.in_flight[id(d)] = d
            pool.submit(self._run_group, group)
        return bool(fetched)

    def _isolate(self, fetched: list[Delivery], state: _RunState) -> list[Delivery]:
        """Events whose last holder died with them run alone: if one of them kills this process too,
        only it is charged for it. Keeps the leading run of ordinary events (order is kept), or the
        suspect alone when it leads; releases the rest uncounted."""
        first = next((i for i, d in enumerate(fetched) if d.abandoned), None)
        state.isolating = first is not None
        if first is None:
            return fetched
        keep = fetched[:first] if first else fetched[:1]
        for d in fetched[len(keep):]:
            self.backend.nack(d, 0.0, None)
        if len(keep) < len(fetched):
            self.backend.flush()  # the releases are durable before anything here runs
        return keep

    def _maintain(self, state: _RunState) -> None:
        """Renew the leases of running handlers; enforce retention now and then."""
        now = time.monotonic()
        if now >= state.renew_at and state.in_flight:
            self.backend.extend(list(state.in_flight.values()), self.lease)
            state.renew_at = now + self.lease / 3
        if self.bus.retention is not None and now >= state.retention_at:
            deleted = self.backend.enforce_retention(time.time() - self.bus.retention)
            log.info("retention: deleted %d acked event(s) older than %.0f s", deleted, self.bus.retention)
            state.retention_at = now + _RETENTION_EVERY

    def _groups(self, fetched: list[Delivery]) -> list[list[Delivery]]:
        """What may run in parallel: every event (shared), every key (key_ordered), nothing (exclusive)."""
        if self.mode is Mode.SHARED:
            return [[d] for d in fetched]
        if self.mode is Mode.EXCLUSIVE:
            return [fetched]
        groups: dict[str | None, list[Delivery]] = {}
        singles: list[list[Delivery]] = []
        for d in fetched:
            key = d.message.record.key
            if key is None:
                singles.append([d])
            else:
                groups.setdefault(key, []).append(d)
        return [*groups.values(), *singles]

    def _settle(self, in_flight: dict[int, Delivery]) -> int:
        """Apply finished outcomes: acks in one batch, then retries, releases and dead letters."""
        acks: list[Delivery] = []
        others: list[tuple[Delivery, Outcome | None]] = []
        while True:
            try:
                delivery, outcome = self._done.get_nowait()
            except queue.Empty:
                break
            in_flight.pop(id(delivery), None)
            if isinstance(outcome, Ack):
                acks.append(delivery)
            else:
                others.append((delivery, outcome))
        if acks:
            self.backend.ack(acks)
        for delivery, outcome in others:
            if isinstance(outcome, Retry):
                self.backend.nack(delivery, outcome.delay, outcome.error)
            elif isinstance(outcome, DeadLetter):
                self.backend.dead_letter(delivery, outcome.error)
                log.error("dead-lettered %s %s after %d attempt(s): %s: %s", delivery.message.record.type,
                          delivery.message.record.id, delivery.attempt, outcome.error.type,
                          outcome.error.message)
            else:
                self.backend.nack(delivery, 0.0, None)  # not run: released, waits behind its key
        if any(not isinstance(o, DeadLetter) for _, o in others):
            self.backend.flush()  # failed and released attempts durable before a handler crash could blame them
        self.processed += len(acks) + sum(isinstance(o, DeadLetter) for _, o in others)
        return len(acks) + len(others)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only a flag: the handler may interrupt this thread inside Event.wait(), holding the
        # Event's lock, so calling stop() from here could deadlock. The loop turns it into stop().
        self._signalled = True


def _error_info(error: BaseException, attempt: int) -> ErrorInfo:
    return ErrorInfo(f"{type(error).__module__}.{type(error).__qualname__}", str(error)[:2000],
                     "".join(traceback.format_exception(error))[-_TRACEBACK_LIMIT:], time.time(), attempt)
