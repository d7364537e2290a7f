"""What the dashboard reads and changes, through the public Bus: one bus behind a lock (a backend is not
shared across threads unguarded), and a sampler thread keeping each subscription's backlog over time."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from edbus.backends.base import Message, StartAt, SubscriptionStats, TopicStats, check_subscription, dlq_topic
from edbus.bus.bus import Bus, check_topic
from edbus.cli.common import iter_messages
from edbus.cli.output import event_dict, iso_time
from edbus.errors import NotFoundError
from edbus.events.codec import new_event_id

__all__ = ["DashboardStore", "DeadLetterView"]

log = logging.getLogger("edbus.dashboard")
T = TypeVar("T")
_DLQ_PREFIX = "edbus_dlq_"


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetterView:
    id: str
    type: str
    key: str | None
    attempts: int
    error_type: str
    error_message: str
    traceback: str
    dead_lettered_at: str
    history: list[dict[str, Any]]
    event: dict[str, Any]


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _view(message: Message, bus: Bus) -> DeadLetterView:
    h = message.record.headers
    try:
        history = json.loads(h.get("edbus_dlq_history") or "[]")
    except json.JSONDecodeError:
        history = []
    attempts = h.get("edbus_dlq_attempts", "0") or "0"
    return DeadLetterView(
        id=message.record.id, type=message.record.type, key=message.record.key,
        attempts=int(attempts) if attempts.isdigit() else 0,
        error_type=h.get("edbus_dlq_error_type", ""), error_message=h.get("edbus_dlq_error_message", ""),
        traceback=h.get("edbus_dlq_traceback", ""),
        dead_lettered_at=iso_time(_float(h.get("edbus_dlq_at")) or message.published_at),
        history=[x for x in history if isinstance(x, dict)] if isinstance(history, list) else [],
        event=event_dict(message, bus.codec))


class DashboardStore:
    """The bus the dashboard uses, with its own samples of every subscription's backlog and topic size."""

    def __init__(self, bus: Bus, *, sample_every: float = 10.0, keep: int = 720) -> None:
        self.bus = bus
        self.sample_every = sample_every
        self._lock = threading.RLock()
        self._samples: dict[tuple[str, str], collections.deque[tuple[float, int]]] = {}
        self._events: dict[str, collections.deque[tuple[float, int]]] = {}
        self._keep = keep
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def locked(self, fn: Callable[[Bus], T]) -> T:
        with self._lock:
            return fn(self.bus)

    # -- sampling ------------------------------------------------------------------------------------
    def sample(self) -> None:
        now = time.time()
        topics, subs = self.locked(lambda b: (b.administration.topics(), b.administration.subscriptions(None)))
        with self._lock:
            for t in topics:
                self._events.setdefault(t.topic, collections.deque(maxlen=self._keep)).append((now, t.events))
            for s in subs:
                key = (s.topic, s.subscription)
                self._samples.setdefault(key, collections.deque(maxlen=self._keep)).append((now, s.backlog))

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="edbus-dashboard-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.sample_every):
            try:
                self.sample()
            except Exception:
                log.exception("dashboard: sampling the backlog failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def backlog_samples(self, topic: str, subscription: str) -> list[tuple[float, int]]:
        with self._lock:
            return list(self._samples.get((topic, subscription), ()))

    def rate(self, topic: str) -> float | None:
        """Events appended per second between the first and the last sample (None: too few samples)."""
        with self._lock:
            found = list(self._events.get(topic, ()))
        if len(found) < 2 or found[-1][0] <= found[0][0]:
            return None
        return max(0, found[-1][1] - found[0][1]) / (found[-1][0] - found[0][0])

    # -- reading -------------------------------------------------------------------------------------
    def topics(self) -> list[TopicStats]:
        return self.locked(lambda b: b.administration.topics())

    def subscriptions(self, topic: str | None = None) -> list[SubscriptionStats]:
        return self.locked(lambda b: b.administration.subscriptions(topic))

    def subscription(self, topic: str, subscription: str) -> SubscriptionStats:
        check_topic(topic)
        check_subscription(subscription)
        found = [s for s in self.subscriptions(topic) if s.subscription == subscription]
        if not found:
            raise NotFoundError(f"no subscription {subscription!r} on topic {topic!r}")
        return found[0]

    def dead_letters(self, topic: str, subscription: str) -> list[DeadLetterView]:
        self.subscription(topic, subscription)
        return self.locked(lambda b: [_view(m, b) for m in iter_messages(
            b.administration, dlq_topic(topic, subscription), StartAt("earliest"))])

    def dead_letter(self, topic: str, subscription: str, event_id: str) -> DeadLetterView:
        found = [d for d in self.dead_letters(topic, subscription) if d.id == event_id]
        if not found:
            raise NotFoundError(f"no dead letter {event_id!r} for {subscription} on {topic}")
        return found[0]

    def schemas(self) -> tuple[list[tuple[str, list[Any]]], list[tuple[str, str]]]:
        """Every event type with its versions, and the compatibility rule of every topic."""
        def read(b: Bus) -> tuple[list[tuple[str, list[Any]]], list[tuple[str, str]]]:
            types = [(name, b.registry.versions(name)) for name in sorted(b.registry.event_types())]
            rules = [(t.topic, str(b.registry.rule(t.topic))) for t in b.administration.topics()
                     if not t.topic.endswith(".dlq")]
            return types, rules
        return self.locked(read)

    # -- changing ------------------------------------------------------------------------------------
    def redrive(self, topic: str, subscription: str, event_id: str | None) -> int:
        if event_id is not None:
            self.dead_letter(topic, subscription, event_id)
        else:
            self.subscription(topic, subscription)
        ids = None if event_id is None else [event_id]
        return self.locked(lambda b: b.administration.redrive(topic, subscription, ids))

    def purge(self, topic: str, subscription: str, event_id: str | None) -> int:
        if event_id is not None:
            self.dead_letter(topic, subscription, event_id)
        else:
            self.subscription(topic, subscription)
        return self.locked(lambda b: b.administration.purge_dead_letters(
            topic, subscription, None if event_id is None else [event_id]))

    def republish(self, topic: str, subscription: str, event_id: str) -> str:
        """Append a copy of a dead letter to its topic as a new event (a new id: every subscription gets it);
        the dead letter stays until purged."""
        self.dead_letter(topic, subscription, event_id)

        def run(b: Bus) -> str:
            dead = iter_messages(b.administration, dlq_topic(topic, subscription), StartAt("earliest"))
            message = next(m for m in dead if m.record.id == event_id)
            r = message.record
            new_id = new_event_id()
            headers = {k: v for k, v in r.headers.items() if not k.startswith(_DLQ_PREFIX)}
            headers["ce_id"] = new_id
            copy = dataclasses.replace(r, id=new_id, headers=headers, sequence=None)
            return b.publish_encoded(topic[len(b.topic_prefix):], [copy])[0]
        return self.locked(run)

    def replay(self, topic: str, subscription: str, to: StartAt) -> tuple[int, int]:
        before = self.subscription(topic, subscription).backlog
        self.locked(lambda b: b.administration.seek(topic, subscription, to))
        return before, self.subscription(topic, subscription).backlog
