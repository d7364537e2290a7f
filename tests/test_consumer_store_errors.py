"""A store error pauses the consumer, which retries with backoff: nothing lost, each event handled once
(leases held), key order kept, on both backends. A permanent error still ends the run.

The outage: ``FaultyBackend`` wraps a real store or broker and raises ``StoreUnavailableError`` (the
error both backends raise when the store or broker is unreachable) on chosen calls, then lets them through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from edbus import Backoff, Bus, Event
from edbus.backends import open_backend
from edbus.backends.base import (
    Backend,
    Delivery,
    ErrorInfo,
    Message,
    Mode,
    Record,
    StartAt,
    SubscriptionStats,
    TopicStats,
)
from edbus.bus.consumer import StoreRetry
from edbus.errors import AccessError, ConfigError, EdbusError, StoreUnavailableError
from edbus.schema.registry import SchemaRegistry
from tests.conftest import eventually
from tests.events import SEQ, Seq


class FaultyBackend(Backend):
    """Delegates every call to ``inner`` (a real store or broker); a call named in ``failures`` raises
    first: ``failures[name]`` times in a row, or while ``down`` is set. ``error`` builds what is raised."""

    def __init__(self, inner: Backend, failures: dict[str, int] | None = None,
                 error: type[EdbusError] = StoreUnavailableError) -> None:
        self.inner = inner
        self.url = inner.url
        self.failures = dict(failures or {})
        self.error = error
        self.raised: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.down = threading.Event()
        self._lock = threading.Lock()

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            fail = self.down.is_set() and name != "close"
            if not fail and self.failures.get(name, 0) > 0:
                self.failures[name] -= 1
                fail = True
            if fail:
                self.raised[name] = self.raised.get(name, 0) + 1
        if fail:
            raise self.error(f"injected: the store is unreachable ({name})")
        return getattr(self.inner, name)(*args)

    @property
    def registry(self) -> SchemaRegistry:
        return self.inner.registry

    def append(self, topic: str, records: Sequence[Record]) -> None:
        self._call("append", topic, records)

    def subscribe(self, topic: str, subscription: str, mode: Mode, start: StartAt) -> None:
        self._call("subscribe", topic, subscription, mode, start)

    def unsubscribe(self, topic: str, subscription: str) -> None:
        self._call("unsubscribe", topic, subscription)

    def fetch(self, topic: str, subscription: str, consumer: str, limit: int, lease: float) -> list[Delivery]:
        result: list[Delivery] = self._call("fetch", topic, subscription, consumer, limit, lease)
        return result

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._call("ack", deliveries)

    def nack(self, delivery: Delivery, delay: float, error: ErrorInfo | None) -> None:
        self._call("nack", delivery, delay, error)

    def flush(self) -> None:
        self._call("flush")

    def dead_letter(self, delivery: Delivery, error: ErrorInfo) -> None:
        self._call("dead_letter", delivery, error)

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> None:
        self._call("extend", deliveries, lease)

    def wait(self, timeout: float) -> None:
        self._call("wait", timeout)

    def seek(self, topic: str, subscription: str, start: StartAt) -> None:
        self._call("seek", topic, subscription, start)

    def read(self, topic: str, start: StartAt, limit: int, after: str | None = None) -> list[Message]:
        result: list[Message] = self._call("read", topic, start, limit, after)
        return result

    def redrive(self, topic: str, subscription: str, event_ids: Sequence[str] | None) -> int:
        result: int = self._call("redrive", topic, subscription, event_ids)
        return result

    def purge_dead_letters(self, topic: str, subscription: str, event_ids: Sequence[str] | None) -> int:
        result: int = self._call("purge_dead_letters", topic, subscription, event_ids)
        return result

    def topics(self) -> list[TopicStats]:
        result: list[TopicStats] = self._call("topics")
        return result

    def subscriptions(self, topic: str | None = None) -> list[SubscriptionStats]:
        result: list[SubscriptionStats] = self._call("subscriptions", topic)
        return result

    def close(self) -> None:
        self.inner.close()


# -- the tests -----------------------------------------------------------------------------------------
FAST_RETRY = StoreRetry(first=0.01, maximum=0.1, give_up_after=1.0)


def faulty_bus(url: str, failures: dict[str, int] | None = None, error: type[EdbusError] = StoreUnavailableError,
               **options: Any) -> tuple[Bus, FaultyBackend]:
    backend = FaultyBackend(open_backend(url), failures, error)
    return Bus(backend, **options), backend


def handled_in_order(calls: list[tuple[str, int]]) -> bool:
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, n in calls:
        by_key[key].append(n)
    return all(ns == sorted(ns) for ns in by_key.values())


def test_store_errors_on_every_call_pause_the_consumer_which_then_processes_each_event_once_in_key_order(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    failures = {"subscribe": 2, "fetch": 3, "ack": 3, "nack": 2, "flush": 2, "extend": 2}
    bus, backend = faulty_bus(url, failures)
    with bus:
        bus.publish_many("t", [(SEQ, Seq(f"k{i % 5}", i)) for i in range(40)])
        consumer = bus.consumer("t", "s", concurrency=4, lease=0.6, max_attempts=5,
                                backoff=Backoff(base=0.01, jitter=0))
        consumer.store_retry = FAST_RETRY
        calls: list[tuple[str, int]] = []
        lock = threading.Lock()

        @consumer.handler(SEQ)
        def handle(event: Event[Seq]) -> None:
            if event.data.n == 7 and event.attempt == 1:
                raise ValueError("once")  # a retry: its nack and the flush meet injected errors too
            time.sleep(0.25 if event.data.n < 5 else 0)  # past a third of the lease: renewals run (and fail)
            with lock:
                calls.append((event.data.key, event.data.n))

        with caplog.at_level(logging.WARNING, logger="edbus.consumer"):
            assert consumer.run(max_events=40, install_signals=False) == 40
        assert backend.failures == dict.fromkeys(failures, 0)  # every injected error was met
        assert sorted(n for _, n in calls) == list(range(40))  # each event handled once: nothing lost, no repeat
        assert handled_in_order(calls)
        assert any("store error, pausing and retrying" in r.getMessage() for r in caplog.records)
        eventually(lambda: bus.backend.subscriptions("t")[0].backlog == 0, timeout=10)


def test_an_outage_is_waited_out_alive_but_not_ready_and_events_published_meanwhile_are_consumed(url: str) -> None:
    bus, backend = faulty_bus(url)
    with bus:
        bus.publish_many("t", [(SEQ, Seq(f"k{i % 3}", i)) for i in range(20)])
        consumer = bus.consumer("t", "s", concurrency=2)
        seen: list[int] = []
        consumer.handler(SEQ)(lambda e: seen.append(e.data.n))
        runner = threading.Thread(target=consumer.run, kwargs={"install_signals": False})
        runner.start()
        try:
            eventually(lambda: len(seen) == 20, timeout=30)
            backend.down.set()
            eventually(lambda: backend.raised.get("fetch", 0) >= 3, timeout=10)  # several backoff turns
            assert not consumer.health.ready()[0]
            assert consumer.health.alive()[0]  # paused, not stuck
            backend.down.clear()
            # published while the consumer was paused: through the inner backend's own bus
            with Bus(open_backend(url)) as other:
                other.publish_many("t", [(SEQ, Seq(f"k{i % 3}", i)) for i in range(20, 30)])
            eventually(lambda: len(seen) == 30, timeout=30)
            eventually(lambda: consumer.health.ready()[0], timeout=10)
        finally:
            consumer.stop()
            runner.join(30)
        assert not runner.is_alive()
        assert sorted(seen) == list(range(30))


@pytest.mark.parametrize("error", [AccessError, ConfigError])
def test_a_permanent_error_still_ends_the_run_with_its_message(tmp_path: Path, error: type[EdbusError]) -> None:
    bus, _ = faulty_bus(f"sqlite:///{tmp_path}/edbus.db", {"fetch": 1}, error)
    with bus:
        bus.publish("t", SEQ, Seq("k", 1))
        consumer = bus.consumer("t", "s")
        consumer.handler(SEQ)(lambda e: None)
        with pytest.raises(error, match=r"injected: the store is unreachable \(fetch\)"):
            consumer.run(install_signals=False)
        assert not consumer.health.alive()[0]


def test_a_stop_while_the_store_stays_down_returns_after_a_bounded_wait(tmp_path: Path) -> None:
    bus, backend = faulty_bus(f"sqlite:///{tmp_path}/edbus.db")
    with bus:
        bus.publish("t", SEQ, Seq("k", 1))
        consumer = bus.consumer("t", "s")
        consumer.store_retry = FAST_RETRY
        handled: list[Event[Seq]] = []
        consumer.handler(SEQ)(handled.append)
        backend.down.set()
        runner = threading.Thread(target=consumer.run, kwargs={"install_signals": False})
        runner.start()
        eventually(lambda: backend.raised.get("subscribe", 0) >= 1)
        started = time.monotonic()
        consumer.stop()
        runner.join(30)
        assert not runner.is_alive()
        assert time.monotonic() - started < FAST_RETRY.give_up_after + 5
        assert handled == []  # the store never answered: nothing ran, nothing was marked done
