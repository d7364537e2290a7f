"""Metrics middleware: counters and latency percentiles, in-process, cheap enough for the hot path."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edbus.backends.base import Delivery, ErrorInfo, Record
from edbus.bus.middleware import Ack, DeadLetter, Middleware, Outcome, Retry

if TYPE_CHECKING:
    from edbus.events.types import Event

__all__ = ["Metrics", "percentile"]


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``samples`` (0 when empty)."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    index = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


class Metrics(Middleware):
    """Counts published, acked, retried and dead-lettered events, and keeps the latest ``window``
    end-to-end latencies (append to handler finish, seconds)."""

    def __init__(self, window: int = 100_000) -> None:
        self._lock = threading.Lock()
        self.counters: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(maxlen=window)
        self.handler_seconds: collections.deque[float] = collections.deque(maxlen=window)
        self._started: dict[int, float] = {}

    def after_publish(self, topic: str, records: Sequence[Record], error: BaseException | None) -> None:
        with self._lock:
            self.counters["publish_failed" if error else "published"] += len(records)

    def before_process(self, delivery: Delivery, event: Event[object] | None) -> None:
        self._started[id(delivery)] = time.time()

    def after_process(self, delivery: Delivery, error: BaseException | None, outcome: Outcome) -> None:
        now = time.time()
        started = self._started.pop(id(delivery), now)
        with self._lock:
            if isinstance(outcome, Ack):
                self.counters["acked"] += 1
                self.latencies.append(now - delivery.message.published_at)
                self.handler_seconds.append(now - started)
            elif isinstance(outcome, Retry):
                self.counters["retried"] += 1
            elif isinstance(outcome, DeadLetter):
                self.counters["dead_lettered"] += 1

    def decide(self, delivery: Delivery, error: BaseException | None, info: ErrorInfo | None) -> Outcome | None:
        return None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = list(self.latencies)
            return {**self.counters, "latency_p50": percentile(lat, 50), "latency_p99": percentile(lat, 99)}
