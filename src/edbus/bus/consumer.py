"""The consumer runtime: leases events from a subscription, runs handlers with bounded concurrency,
applies the middleware's decision (ack, retry later, dead-letter) and stops gracefully.

Threads: the calling thread runs the fetch loop (fetch, ack, nack, dead-letter); a pool of ``concurrency``
workers runs handlers; a ``LeaseKeeper`` renews leases and a ``RetentionSweeper`` enforces retention, each
on a thread of its own. Events of one key leased together run one after another in one worker, so
per-key order holds inside the process as it does across processes.

A store error (``StoreError``: the store or broker unreachable, a timeout) pauses the loop, which retries
with backoff and keeps every outcome not yet recorded; any other error ends ``run``. With
``handler_timeout``, a handler past its limit has its event released for retry (``bus.timeouts``).
"""

from __future__ import annotations

import dataclasses
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
from typing import Any, Protocol, TypeVar

from edbus.backends.base import Backend, Delivery, ErrorInfo, Mode, StartAt
from edbus.bus.health import Health
from edbus.bus.leases import InFlight, LeaseKeeper
from edbus.bus.middleware import Ack, DeadLetter, MiddlewareChain, Outcome, Retry
from edbus.bus.retention import RetentionSweeper
from edbus.bus.timeouts import HandlerTimedOut, RunningHandlers, StuckHandlerError
from edbus.errors import ConfigError, DecodeError, NotFoundError, StoreError, redact
from edbus.events.codec import Codec
from edbus.events.types import Event, EventType

__all__ = ["Consumer", "EventHandler", "StoreRetry"]

log = logging.getLogger("edbus.consumer")
P = TypeVar("P")
_TRACEBACK_LIMIT = 16_000


@dataclasses.dataclass(frozen=True, slots=True)
class StoreRetry:
    """How the loop waits out a store error: ``first`` seconds, doubling up to ``maximum``; after a stop,
    ``give_up_after`` seconds of errors end the run (what is unsettled is redelivered after its lease)."""

    first: float = 0.2
    maximum: float = 10.0
    give_up_after: float = 10.0


class EventHandler(Protocol):
    """A class-based handler: ``event_type`` and ``handle(event)``."""

    event_type: EventType[Any]

    def handle(self, event: Event[Any]) -> None: ...


class _RunState:
    """What one ``run`` tracks: leased deliveries not yet settled, finished ones the store has not taken yet,
    and the state of the store."""

    def __init__(self) -> None:
        self.in_flight = InFlight()
        self.pending: list[tuple[Delivery, Outcome | None]] = []  # finished, not yet recorded in the store
        self.flush_due = False  # released or failed attempts recorded, not yet made durable (``flush``)
        self.timed_out: set[int] = set()  # deliveries settled by their time limit: the worker's outcome is dropped
        self.idle_since = time.monotonic()
        self.isolating = False  # the last fetch held an event whose previous holder died
        self.subscribed = False
        self.failing_since: float | None = None  # monotonic: the first store error of the current outage
        self.backoff = 0.0  # the next pause after a store error; 0: the first one


class Consumer:
    def __init__(self, backend: Backend, codec: Codec, topic: str, subscription: str, *, mode: Mode,
                 start: StartAt, middleware: MiddlewareChain, concurrency: int, lease: float, batch: int,
                 name: str | None, retention: float | None, handler_timeout: float | None = None) -> None:
        """Built by ``Bus.consumer`` with the bus's backend, codec and ``retention`` (seconds its sweeper keeps
        acked events; None: forever). ``handler_timeout``: seconds a handler may run before its event is released
        for retry (None: no limit); if its thread cannot be freed, ``run`` raises ``StuckHandlerError``."""
        if concurrency < 1 or batch < 1 or lease <= 0:
            raise ConfigError("concurrency and batch must be >= 1 and lease > 0")
        if handler_timeout is not None and handler_timeout <= 0:
            raise ConfigError("handler_timeout must be > 0 seconds (or None: no limit)")
        self.backend = backend
        self.codec = codec
        self.retention = retention
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
        self.handler_timeout = handler_timeout
        self.health = Health()  # serve it with ``edbus.bus.health.serve_health``
        self.store_retry = StoreRetry()
        self.retention_schedule = (60.0, 600.0)  # seconds: first sweep after start, then between sweeps
        self.retention_sweeper: RetentionSweeper | None = None  # the current run's
        self._running: RunningHandlers | None = None

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
                envelope, data = self.codec.decode_dict(delivery.message)
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
                    self.codec.writer_schema(record.type, version)
                except NotFoundError:
                    raise DecodeError(f"unknown event type {record.type!r} (schema version {version})") from None
                self.middleware.before_process(delivery, None)
            else:
                event_type, fn = entry
                envelope, data = self.codec.decode(delivery.message, event_type)
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
                        delivery.attempt, type(error).__name__, redact(str(error)))
        return outcome

    def _run_group(self, group: list[Delivery]) -> None:
        """Events of one key, in order; after a failure the rest wait for it (released, not run)."""
        failed = False
        for delivery in group:
            outcome: Outcome | None = None
            if not failed:
                try:
                    outcome = self._run_one(delivery)
                except HandlerTimedOut:  # landed as the handler returned: its event was settled by its limit
                    outcome = None
                failed = not isinstance(outcome, Ack)
            self._done.put((delivery, outcome))
        self._wakeup.set()

    def _run_one(self, delivery: Delivery) -> Outcome:
        running = self._running
        if running is not None:
            running.begin(delivery)
        try:
            return self._process(delivery)
        except BaseException as exc:  # a middleware bug: retry later, counting the attempt
            log.exception("processing %s crashed", delivery.message.record.id)
            return Retry(1.0, _error_info(exc, delivery.attempt))
        finally:
            if running is not None:
                running.end(delivery)

    # -- the loop (calling thread) -----------------------------------------------------------
    def run(self, *, max_events: int | None = None, idle_timeout: float | None = None,
            install_signals: bool = True) -> int:
        """Consume until ``stop()``, SIGTERM/SIGINT, ``max_events`` processed, or ``idle_timeout`` seconds
        without events. Returns how many events this run processed (acked or dead-lettered);
        ``processed`` counts them over every run.

        A ``StoreError`` pauses and retries with backoff (``health`` says the store is unreachable); any
        other error ends the run, releasing what it held. ``StuckHandlerError``: a handler passed
        ``handler_timeout`` and its thread could not be freed; exit the process (``exit_for_supervisor``)."""
        base = self.processed
        # max_events ends this run only: a later run() of this consumer processes up to its own max_events
        target = None if max_events is None else base + max_events
        previous = self._install_signals() if install_signals else {}
        state = _RunState()
        self._running = RunningHandlers(self.handler_timeout) if self.handler_timeout is not None else None
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"edbus-{self.subscription}")
        keeper = LeaseKeeper(self.backend, state.in_flight, self.lease, name=f"edbus-leases-{self.subscription}")
        sweeper = RetentionSweeper.for_backend(self.backend, self.retention, first=self.retention_schedule[0],
                                               every=self.retention_schedule[1])
        self.retention_sweeper = sweeper
        stuck = False
        self.health.started()
        try:
            keeper.start()
            if sweeper is not None:
                sweeper.start()
            self._loop(state, pool, target, idle_timeout)
        except StuckHandlerError:
            stuck = True
            raise
        finally:
            self.health.stopped()
            if sweeper is not None:
                sweeper.stop()
            # on a fatal error: run nothing more, settle what ran, release what never started
            pool.shutdown(wait=not stuck, cancel_futures=True)
            if stuck:
                self._wait_for_healthy_handlers()
            try:
                self._release_all(state)
            finally:
                keeper.stop()
                self._running = None
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return self.processed - base

    def _loop(self, state: _RunState, pool: ThreadPoolExecutor, target: int | None,
              idle_timeout: float | None) -> None:
        while True:
            self.health.beat()
            if self._signalled:
                self._stop.set()
            try:
                turn = self._turn(state, pool, target, idle_timeout)
            except StoreError as exc:
                if not self._pause(state, exc):
                    return
                continue
            if state.failing_since is not None:
                log.info("the store answers again after %.1f s", time.monotonic() - state.failing_since)
                state.failing_since, state.backoff = None, 0.0
            self.health.store_answered()
            if turn is None:
                return

    def _turn(self, state: _RunState, pool: ThreadPoolExecutor, target: int | None,
              idle_timeout: float | None) -> bool | None:
        """One turn of the loop: settle, fetch, check time limits, wait. None when the run is over."""
        if not state.subscribed:
            self.backend.subscribe(self.topic, self.subscription, self.mode, self.start)
            state.subscribed = True
        progressed = self._settle(state) > 0
        finishing = self._stop.is_set() or (target is not None and self.processed >= target)
        if finishing:
            if not state.in_flight:
                return None
        else:
            progressed = self._fetch(state, pool, target) or progressed
        self._check_time_limits(state)
        if progressed:
            state.idle_since = time.monotonic()
            return True
        if idle_timeout is not None and not state.in_flight \
                and time.monotonic() - state.idle_since > idle_timeout:
            return None
        if state.in_flight or finishing:
            self._wakeup.wait(0.01)  # a worker finishing sets it
            self._wakeup.clear()
        else:
            self.backend.wait(min(0.25, self.lease / 3))  # an append wakes it
        return False

    def _pause(self, state: _RunState, error: StoreError) -> bool:
        """After a store error: wait (with backoff) before the next turn; False when the run should end
        (stopping, and the store still failing after ``_GIVE_UP_STOPPING``: what is unsettled is delivered
        again once its lease ends)."""
        now = time.monotonic()
        self.health.store_failed(error)
        if state.failing_since is None:
            state.failing_since = now
            log.warning("store error, pausing and retrying (%d event(s) held, %d outcome(s) not yet recorded): "
                        "%s: %s", len(state.in_flight), len(state.pending), type(error).__name__, error)
        else:
            log.debug("store still failing after %.1f s: %s", now - state.failing_since, error)
        retry = self.store_retry
        if self.stopping and now - state.failing_since > retry.give_up_after:
            log.warning("stopping with the store unreachable for %.0f s: %d event(s) not settled are delivered "
                        "again when their lease ends", now - state.failing_since, len(state.in_flight))
            return False
        pause = min(state.backoff * 2, retry.maximum) if state.backoff else retry.first
        state.backoff = pause
        deadline = now + (min(pause, 1.0) if self.stopping else pause)
        while (left := deadline - time.monotonic()) > 0:
            self._wakeup.wait(min(left, 1.0))  # handlers finishing wake it: their outcomes wait in ``pending``
            self._wakeup.clear()
            self.health.beat()  # backing off is alive, not stuck
            self._check_time_limits(state)
        return True

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
        fetched = self.backend.fetch(self.topic, self.subscription, self.name, limit, self.lease)
        for d in fetched:
            state.in_flight.add(d)
        for group in self._groups(self._isolate(fetched, state)):
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
        if len(keep) < len(fetched):
            state.pending.extend((d, None) for d in fetched[len(keep):])
            try:
                self._apply(state)  # the releases are durable before anything here runs
            except StoreError:
                state.pending.extend((d, None) for d in keep)  # not run: released once the store answers
                raise
        return keep

    def _check_time_limits(self, state: _RunState) -> None:
        """Handlers past ``handler_timeout``: their events are released for retry (a failed attempt);
        ``StuckHandlerError`` once one's thread did not come back within the grace period."""
        running = self._running
        if running is None:
            return
        for delivery in running.overdue():
            record = delivery.message.record
            error = HandlerTimedOut(f"the handler of {record.type} {record.id} ran over handler_timeout="
                                    f"{running.timeout:g} s")
            info = _error_info(error, delivery.attempt)
            outcome = self.middleware.decide(delivery, error, info)
            self.middleware.after_process(delivery, error, outcome)
            log.error("%s (attempt %d): released for retry; its thread is asked to stop", error, delivery.attempt)
            state.timed_out.add(id(delivery))
            state.pending.append((delivery, outcome))
        hung = running.stuck()
        if hung is not None:
            raise StuckHandlerError(
                f"the handler of {hung.message.record.type} {hung.message.record.id} ran over handler_timeout="
                f"{running.timeout:g} s and its thread did not stop within {running.grace:g} s (blocked in a "
                "system call?)")

    def _wait_for_healthy_handlers(self) -> None:
        """After a stuck handler: let the other running handlers finish, up to one time limit."""
        running = self._running
        if running is None:
            return
        deadline = time.monotonic() + running.timeout
        while running.busy() and time.monotonic() < deadline:
            self._wakeup.wait(0.05)
            self._wakeup.clear()

    def _release_all(self, state: _RunState) -> None:
        """At the end of a run: record the outcomes that came, release everything else still held."""
        try:
            self._settle(state)
            for delivery in state.in_flight.snapshot():
                if id(delivery) not in state.timed_out:
                    state.pending.append((delivery, None))
            self._apply(state)
        except StoreError as exc:
            log.warning("%d event(s) could not be settled or released (the store: %s): they are delivered "
                        "again when their lease ends", len(state.in_flight), exc)

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

    def _settle(self, state: _RunState) -> int:
        """Take the outcomes workers finished, then record them (``_apply``)."""
        while True:
            try:
                delivery, outcome = self._done.get_nowait()
            except queue.Empty:
                break
            if id(delivery) in state.timed_out:  # settled already by its time limit
                state.timed_out.discard(id(delivery))
                continue
            state.pending.append((delivery, outcome))
        return self._apply(state)

    def _apply(self, state: _RunState) -> int:
        """Record pending outcomes: acks in one batch, then retries, releases and dead letters, in order.
        On a store error what is not recorded stays pending (tried again after the pause)."""
        settled = 0
        acks = [d for d, o in state.pending if isinstance(o, Ack)]
        if acks:
            self.backend.ack(acks)
            state.pending = [(d, o) for d, o in state.pending if not isinstance(o, Ack)]
            for d in acks:
                state.in_flight.discard(d)
            self.processed += len(acks)
            settled += len(acks)
        while state.pending:
            delivery, outcome = state.pending[0]
            if isinstance(outcome, Retry):
                self.backend.nack(delivery, outcome.delay, outcome.error)
            elif isinstance(outcome, DeadLetter):
                self.backend.dead_letter(delivery, outcome.error)
                log.error("dead-lettered %s %s after %d attempt(s): %s: %s", delivery.message.record.type,
                          delivery.message.record.id, delivery.attempt, outcome.error.type,
                          outcome.error.message)
                self.processed += 1
            else:
                self.backend.nack(delivery, 0.0, None)  # not run: released, waits behind its key
            if not isinstance(outcome, DeadLetter):
                state.flush_due = True
            state.pending.pop(0)
            state.in_flight.discard(delivery)
            settled += 1
        if state.flush_due:
            self.backend.flush()  # failed and released attempts durable before a handler crash could blame them
            state.flush_due = False
        return settled

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
    # kept in the store, logged and shown: a foreign error's text may quote a URL with credentials
    return ErrorInfo(f"{type(error).__module__}.{type(error).__qualname__}", redact(str(error)[:2000]),
                     redact("".join(traceback.format_exception(error))[-_TRACEBACK_LIMIT:]), time.time(), attempt)
