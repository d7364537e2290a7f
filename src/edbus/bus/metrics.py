"""Metrics: in-process counters and latency percentiles (``Metrics``), and Prometheus export
(``PrometheusMetrics`` middleware, ``StoreCollector`` for store-wide backlog and lag) with the optional
``prometheus_client`` (``pip install edbus[metrics]``)."""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from edbus.backends.base import Delivery, ErrorInfo, Record
from edbus.bus.middleware import Ack, DeadLetter, Middleware, MiddlewareChain, Outcome, Retry
from edbus.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from edbus.backends.base import Administrable, SubscriptionStats, TopicStats
    from edbus.events.types import Event

__all__ = ["Metrics", "PrometheusMetrics", "StoreCollector", "percentile", "serve_bus_metrics", "serve_metrics"]

log = logging.getLogger("edbus.metrics")


class _Instrumented(Protocol):
    """What ``serve_bus_metrics`` needs of a ``Bus`` (a Protocol: this module does not import bus.py,
    which imports it)."""

    middleware: MiddlewareChain


class _Administered(Protocol):
    @property
    def administration(self) -> Administrable: ...

# seconds: handler runs and publishes are usually milliseconds; end-to-end lag can be minutes
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``samples`` (0 when empty)."""
    if not samples:
        return 0.0
    return _ranked(sorted(samples), p)


def _ranked(ordered: Sequence[float], p: float) -> float:
    index = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))  # rank ceil(p% of n)
    return ordered[index]


class Metrics(Middleware):
    """Counts published, acked, retried and dead-lettered events, and keeps the latest ``window``
    end-to-end latencies (append to handler finish, seconds).

    The workers take no lock: each counts in a Counter of its own thread (a shared lock, taken once per
    event by every worker, cost ~20 % of a consumer's rate: alternating runs, 4 workers,
    docs/benchmarks.md), and appends to the deques, which is atomic; ``snapshot`` sums the threads'
    counters and copies the samples (``list`` of a deque runs in C, under the GIL) and sorts them
    outside, so a reader never stalls the handlers."""

    def __init__(self, window: int = 100_000) -> None:
        self._lock = threading.Lock()  # publish counts, and the list of the workers' counters
        self.counters: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(maxlen=window)
        self.handler_seconds: collections.deque[float] = collections.deque(maxlen=window)
        self._started: dict[int, float] = {}
        self._local = threading.local()
        self._per_thread: list[collections.Counter[str]] = []

    def _thread_counters(self) -> collections.Counter[str]:
        counts: collections.Counter[str] | None = getattr(self._local, "counts", None)
        if counts is None:
            counts = self._local.counts = collections.Counter()
            with self._lock:
                self._per_thread.append(counts)
        return counts

    def after_publish(self, topic: str, records: Sequence[Record], error: BaseException | None) -> None:
        with self._lock:
            self.counters["publish_failed" if error else "published"] += len(records)

    def before_process(self, delivery: Delivery, event: Event[object] | None) -> None:
        self._started[id(delivery)] = time.time()

    def after_process(self, delivery: Delivery, error: BaseException | None, outcome: Outcome) -> None:
        now = time.time()
        started = self._started.pop(id(delivery), now)
        if isinstance(outcome, Ack):
            self._thread_counters()["acked"] += 1
            self.latencies.append(now - delivery.message.published_at)
            self.handler_seconds.append(now - started)
        elif isinstance(outcome, Retry):
            self._thread_counters()["retried"] += 1
        elif isinstance(outcome, DeadLetter):
            self._thread_counters()["dead_lettered"] += 1

    def decide(self, delivery: Delivery, error: BaseException | None, info: ErrorInfo | None) -> Outcome | None:
        return None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            total = self.counters.copy()
            for counts in self._per_thread:
                total.update(counts.copy())  # a C-level copy: a worker may count meanwhile
        counters = dict(total)
        lat = list(self.latencies)  # a C-level copy; the O(n log n) sort happens unlocked
        lat.sort()
        latency_p50 = _ranked(lat, 50) if lat else 0.0
        latency_p99 = _ranked(lat, 99) if lat else 0.0
        return {**counters, "latency_p50": latency_p50, "latency_p99": latency_p99}


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError("Prometheus metrics need prometheus_client: pip install 'edbus[metrics]'") from None
    return prometheus_client


class PrometheusMetrics(Middleware):
    """Prometheus counters and histograms of what this process publishes and handles.

    Labels are the topic and subscription only (never event ids or types' payloads), so the series stay few.
    ``registry``: where they are registered (default: prometheus_client's global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prom = _prometheus()
        reg = registry if registry is not None else prom.REGISTRY
        self.registry = reg
        ts = ("topic", "subscription")
        self.published = prom.Counter("edbus_published_events", "Events stored by publishes of this process.",
                                      ("topic",), registry=reg)
        self.publish_failed = prom.Counter("edbus_publish_failed_events",
                                           "Events whose publish failed (not stored).", ("topic",), registry=reg)
        self.publish_seconds = prom.Histogram("edbus_publish_duration_seconds",
                                              "Time to store one publish call durably (one or more events).",
                                              ("topic",), buckets=_FAST_BUCKETS, registry=reg)
        self.consumed = prom.Counter("edbus_consumed_events", "Events handled and acked.", ts, registry=reg)
        self.retries = prom.Counter("edbus_retries", "Handler failures that scheduled a retry.", ts, registry=reg)
        self.dead_letters = prom.Counter("edbus_dead_letters", "Events moved to the dead-letter topic.", ts,
                                         registry=reg)
        self.handler_seconds = prom.Histogram("edbus_handler_duration_seconds",
                                              "Handler run time, failures included.", ts,
                                              buckets=_FAST_BUCKETS, registry=reg)
        self.end_to_end_seconds = prom.Histogram("edbus_end_to_end_latency_seconds",
                                                 "From an event's append to its ack.", ts,
                                                 buckets=_LAG_BUCKETS, registry=reg)
        self._local = threading.local()  # publish start per thread: before_ and after_publish share it
        self._started: dict[int, float] = {}

    def before_publish(self, topic: str, records: Sequence[Record]) -> Sequence[Record]:
        self._local.started = time.perf_counter()
        return records

    def after_publish(self, topic: str, records: Sequence[Record], error: BaseException | None) -> None:
        started = getattr(self._local, "started", None)
        self._local.started = None
        if error is not None:
            self.publish_failed.labels(topic).inc(len(records))
            return
        self.published.labels(topic).inc(len(records))
        if started is not None:
            self.publish_seconds.labels(topic).observe(time.perf_counter() - started)

    def before_process(self, delivery: Delivery, event: Event[object] | None) -> None:
        self._started[id(delivery)] = time.perf_counter()

    def after_process(self, delivery: Delivery, error: BaseException | None, outcome: Outcome) -> None:
        started = self._started.pop(id(delivery), None)
        labels = (delivery.message.topic, delivery.subscription)
        if started is not None:
            self.handler_seconds.labels(*labels).observe(time.perf_counter() - started)
        if isinstance(outcome, Ack):
            self.consumed.labels(*labels).inc()
            self.end_to_end_seconds.labels(*labels).observe(max(0.0, time.time() - delivery.message.published_at))
        elif isinstance(outcome, Retry):
            self.retries.labels(*labels).inc()
        elif isinstance(outcome, DeadLetter):
            self.dead_letters.labels(*labels).inc()


class StoreCollector:
    """Store-wide gauges read at scrape time: events and bytes per topic; backlog, in flight, dead
    letters, oldest-unacked age and live consumers per subscription; ``edbus_store_up``.

    ``stats``: a callable giving ``(topics, subscriptions)`` (e.g. from a Bus opened for this collector
    alone: backends are not shared across threads). ``topics``: only these stored topic names (None: all).
    A failing store read is logged and shows as ``edbus_store_up 0``, not as a failed scrape."""

    def __init__(self, stats: Callable[[], tuple[list[TopicStats], list[SubscriptionStats]]],
                 topics: Sequence[str] | None = None) -> None:
        self._prom_core = _prometheus().metrics_core
        self._stats = stats
        self._topics = set(topics) if topics is not None else None
        self._lock = threading.Lock()  # scrapes arrive on several threads; the store is read by one

    def describe(self) -> list[Metric]:
        return []  # registered without a describe-time scrape of the store

    def collect(self) -> Iterator[Metric]:
        core = self._prom_core
        up = core.GaugeMetricFamily("edbus_store_up", "1 if the store answered the last scrape, else 0.")
        try:
            with self._lock:
                topics, subs = self._stats()
        except Exception:
            log.exception("metrics: reading topic and subscription stats failed")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        wanted = self._topics
        t_events = core.GaugeMetricFamily("edbus_topic_events", "Events stored in the topic.", labels=["topic"])
        t_bytes = core.GaugeMetricFamily("edbus_topic_bytes", "Bytes stored in the topic.", labels=["topic"])
        for t in topics:
            if wanted is None or t.topic in wanted:
                t_events.add_metric([t.topic], t.events)
                t_bytes.add_metric([t.topic], t.bytes)
        yield t_events
        yield t_bytes
        ts = ["topic", "subscription"]
        families = {
            "backlog": core.GaugeMetricFamily("edbus_subscription_backlog",
                                              "Events not yet acked (in flight included).", labels=ts),
            "in_flight": core.GaugeMetricFamily("edbus_subscription_in_flight",
                                                "Events leased to a consumer now.", labels=ts),
            "dead": core.GaugeMetricFamily("edbus_subscription_dead_lettered",
                                           "Events waiting in the dead-letter topic.", labels=ts),
            "age": core.GaugeMetricFamily("edbus_subscription_oldest_unacked_age_seconds",
                                          "Age of the oldest unacked event (0 when none).", labels=ts),
            "consumers": core.GaugeMetricFamily("edbus_subscription_consumers",
                                                "Consumers alive (seen in the last minute).", labels=ts),
        }
        for s in subs:
            if wanted is not None and s.topic not in wanted:
                continue
            labels = [s.topic, s.subscription]
            families["backlog"].add_metric(labels, s.backlog)
            families["in_flight"].add_metric(labels, s.in_flight)
            families["dead"].add_metric(labels, s.dead_lettered)
            families["age"].add_metric(labels, s.oldest_unacked_age or 0.0)
            families["consumers"].add_metric(labels, s.consumers)
        yield from families.values()


def serve_metrics(port: int, registry: CollectorRegistry, *, address: str = "0.0.0.0") -> Callable[[], None]:
    """Serve ``registry`` at ``http://address:port/metrics`` from a daemon thread; returns a stop function."""
    prom = _prometheus()
    try:
        server, thread = prom.start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}") from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


def serve_bus_metrics(bus: _Instrumented, port: int, *, stats_bus: _Administered | None = None,
                      topics: Sequence[str] | None = None, address: str = "0.0.0.0") -> Callable[[], None]:
    """Export ``bus``'s Prometheus metrics at ``http://address:port/metrics``; returns a stop function.

    Adds a ``PrometheusMetrics`` to ``bus``'s middleware (call it before ``bus.consumer()``: a consumer takes
    the middleware it has when it is made). ``stats_bus``: a Bus of its own on the same store, read at each
    scrape for the store gauges of ``topics`` (stored names; None: every topic); without it, only the
    counters and histograms are exported."""
    prom = _prometheus()
    registry = prom.CollectorRegistry()
    bus.middleware.middleware.append(PrometheusMetrics(registry))
    if stats_bus is not None:
        own = stats_bus.administration  # a backend without administration: refused here, not at each scrape

        def stats() -> tuple[list[TopicStats], list[SubscriptionStats]]:
            return own.topics(), own.subscriptions(None)

        registry.register(StoreCollector(stats, topics))
    return serve_metrics(port, registry, address=address)
