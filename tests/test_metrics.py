"""Metrics: in-process snapshot, Prometheus counters and histograms of a real consumer, store-wide gauges,
and the HTTP endpoints of ``edbus consume --metrics-port`` and ``edbus exporter`` in their own processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from edbus import Backoff, Bus, Event
from edbus.bus.metrics import Metrics, PrometheusMetrics, percentile
from edbus.bus.retries import Retries
from edbus.bus.tracing import Tracing
from edbus.cli.exporter import store_registry
from edbus.errors import ConfigError
from tests.conftest import eventually
from tests.events import CATALOG_CHANGED, CourseInfo, course

EDBUS = [sys.executable, "-m", "edbus.cli.main"]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples}


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in text_string_to_metric_families(text) for s in m.samples}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_snapshot_percentiles_match_the_nearest_rank_of_the_samples() -> None:
    m = Metrics(window=1000)
    m.latencies.extend(float(i) for i in range(100, 0, -1))
    m.counters["acked"] = 100
    snap = m.snapshot()
    assert snap["acked"] == 100
    assert snap["latency_p50"] == percentile(list(m.latencies), 50) == 50.0
    assert snap["latency_p99"] == 99.0


def test_outcomes_counted_by_many_worker_threads_at_once_are_all_in_the_snapshot() -> None:
    import threading

    from edbus.backends.base import Delivery, Message, Record
    from edbus.bus.middleware import Ack, Retry

    m = Metrics(window=100)
    delivery = Delivery(Message(Record("id", "t", None, {}, b""), "t", "0", 0.0), "s", 1, (), None)
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for i in range(5000):
            m.after_process(delivery, None, Ack() if i % 5 else Retry(1.0, None))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        m.snapshot()  # read while they count
        threads[0].join(0.001)
    snap = m.snapshot()
    assert (snap["acked"], snap["retried"]) == (8 * 4000, 8 * 1000)
    assert len(m.latencies) == 100


def test_prometheus_counts_published_acked_retried_and_dead_lettered_events_per_subscription(url: str) -> None:
    registry = CollectorRegistry()
    bus = Bus.from_url(url, middleware=[Tracing(), Metrics(), Retries(2, Backoff(0.01, jitter=0)),
                                        PrometheusMetrics(registry)])
    try:
        bus.publish_many("t", [(CATALOG_CHANGED, course(i)) for i in range(5)])
        bus.publish("t", CATALOG_CHANGED, course(99, "poison"))
        consumer = bus.consumer("t", "s", max_attempts=2, backoff=Backoff(0.01, jitter=0))
        # the consumer's own retry policy replaces Retries, the Prometheus middleware stays in its chain

        def handle(event: Event[CourseInfo]) -> None:
            if event.data.name == "poison":
                raise RuntimeError("boom")

        consumer.add(CATALOG_CHANGED, handle)
        consumer.run(max_events=6, install_signals=False)  # 5 acks; one failure, then its dead letter
        topic = bus.topic("t")
        got = samples(registry)
        ts = (("subscription", "s"), ("topic", topic))
        assert got[("edbus_published_events_total", (("topic", topic),))] == 6
        assert got[("edbus_publish_duration_seconds_count", (("topic", topic),))] == 2  # two publish calls
        assert got[("edbus_consumed_events_total", ts)] == 5
        assert got[("edbus_retries_total", ts)] == 1
        assert got[("edbus_dead_letters_total", ts)] == 1
        assert got[("edbus_handler_duration_seconds_count", ts)] == 7
        assert got[("edbus_end_to_end_latency_seconds_count", ts)] == 5
        assert not any("id" in dict(labels) for _, labels in got)  # no per-event label anywhere
    finally:
        bus.close()


def test_store_gauges_show_backlog_oldest_unacked_age_and_dead_letters_per_subscription(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/edbus.db"
    with Bus.from_url(url) as bus:
        bus.publish_many("t", [(CATALOG_CHANGED, course(i)) for i in range(4)])
        consumer = bus.consumer("t", "s", max_attempts=1)

        def fail(event: Event[CourseInfo]) -> None:
            if event.data.name == "Course 0":
                raise RuntimeError("boom")

        consumer.add(CATALOG_CHANGED, fail)
        consumer.run(max_events=4, install_signals=False)  # 3 acked, 1 dead-lettered
        bus.publish_many("t", [(CATALOG_CHANGED, course(i)) for i in range(4, 6)])  # the backlog: 2
        stats = {s.subscription: s for s in bus.subscriptions("t")}["s"]
        with Bus.from_url(url, create=False) as own:
            got = samples(store_registry(own))
    ts = (("subscription", "s"), ("topic", "t"))
    assert got[("edbus_store_up", ())] == 1
    assert got[("edbus_topic_events", (("topic", "t"),))] == 6
    assert got[("edbus_subscription_backlog", ts)] == stats.backlog == 2
    assert got[("edbus_subscription_dead_lettered", ts)] == stats.dead_lettered == 1
    assert got[("edbus_subscription_oldest_unacked_age_seconds", ts)] > 0
    assert ("edbus_subscription_consumers", ts) in got


def test_prometheus_metrics_without_prometheus_client_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r"edbus\[metrics\]"):
        PrometheusMetrics(CollectorRegistry())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/edbus.db"
    with Bus.from_url(url) as bus:
        bus.publish_many("t", [(CATALOG_CHANGED, course(i)) for i in range(6)])
    yield url


def _serve(args: list[str], url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDBUS_URL": url}
    return subprocess.Popen(EDBUS + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return scraped(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)


def test_consume_metrics_port_serves_its_counters_and_its_subscriptions_backlog(store: str) -> None:
    port = free_port()
    proc = _serve(["consume", "t", "s", "--print", "--metrics-port", str(port), "--idle-exit", "30"], store)
    ts = (("subscription", "s"), ("topic", "t"))
    try:
        def done() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            try:
                got = _scrape(port)
            except httpx.TransportError:
                return None
            return got if got.get(("edbus_consumed_events_total", ts)) == 6 else None

        got = eventually(done, timeout=30, interval=0.1)
        assert got[("edbus_subscription_backlog", ts)] in (0, 1)  # the last ack may not be committed yet
        got = eventually(lambda: (g := _scrape(port))[("edbus_subscription_backlog", ts)] == 0 and g, timeout=10)
        assert got[("edbus_subscription_consumers", ts)] == 1
        assert got[("edbus_store_up", ())] == 1
    finally:
        err = _stop(proc)
    assert "Traceback" not in err


def test_exporter_serves_every_topics_gauges_and_stops_on_sigterm(store: str) -> None:
    with Bus.from_url(store) as bus:
        bus.consumer("other", "late").run(idle_timeout=0.1, install_signals=False)  # subscribed, nothing to do
        bus.publish("other", CATALOG_CHANGED, course(1))
    port = free_port()
    proc = _serve(["exporter", "--port", str(port), "--address", "127.0.0.1"], store)
    try:
        def up() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            try:
                return _scrape(port)
            except httpx.TransportError:
                return None

        got = eventually(up, timeout=20, interval=0.1)
        assert got[("edbus_topic_events", (("topic", "t"),))] == 6
        assert got[("edbus_topic_events", (("topic", "other"),))] == 1
        assert got[("edbus_subscription_backlog", (("subscription", "late"), ("topic", "other")))] == 1
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    finally:
        err = _stop(proc)
    assert "Traceback" not in err


def test_exporter_on_a_missing_store_is_one_error_line(tmp_path: Path) -> None:
    done = subprocess.run([*EDBUS, "--url", f"sqlite:///{tmp_path}/none.db", "exporter", "--port", "0"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith("error:") and "Traceback" not in done.stderr


def test_every_metric_named_by_the_docs_alert_rules_and_grafana_dashboard_is_exported(tmp_path: Path) -> None:
    import json
    import re

    root = Path(__file__).resolve().parent.parent
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    with Bus.from_url(f"sqlite:///{tmp_path}/edbus.db") as bus:
        bus.publish("t", CATALOG_CHANGED, course(1))
        exported = {m.name for m in registry.collect()} | {m.name for m in store_registry(bus).collect()}
    names = {s.name for m in registry.collect() for s in m.samples} | exported
    for m in registry.collect():  # histogram series: _bucket, _count, _sum
        names |= {f"{m.name}{suffix}" for suffix in ("_bucket", "_count", "_sum", "_total")}
    grafana = json.loads((root / "docs/grafana/edbus.json").read_text())
    exprs = [t["expr"] for p in grafana["panels"] for t in p["targets"]]
    text = (root / "docs/metrics.md").read_text() + "\n".join(exprs)
    named = set(re.findall(r"\bedbus_[a-z_]+", text))
    assert named and named <= names, named - names


def test_serve_bus_metrics_adds_the_middleware_to_a_bus_and_serves_counters_and_gauges(tmp_path: Path) -> None:
    from edbus.bus.metrics import serve_bus_metrics

    url = f"sqlite:///{tmp_path}/edbus.db"
    port = free_port()
    with Bus.from_url(url) as bus, Bus.from_url(url) as stats_bus:
        stop = serve_bus_metrics(bus, port, stats_bus=stats_bus, topics=["t"], address="127.0.0.1")
        try:
            bus.publish_many("t", [(CATALOG_CHANGED, course(i)) for i in range(3)])
            consumer = bus.consumer("t", "s", max_attempts=3)  # its own retry policy keeps the exporter
            consumer.add(CATALOG_CHANGED, lambda e: None)
            consumer.run(max_events=3, install_signals=False)
            got = _scrape(port)
        finally:
            stop()
    ts = (("subscription", "s"), ("topic", "t"))
    assert got[("edbus_published_events_total", (("topic", "t"),))] == 3
    assert got[("edbus_consumed_events_total", ts)] == 3
    assert got[("edbus_topic_events", (("topic", "t"),))] == 3


def test_consume_metrics_port_already_in_use_is_one_error_line(store: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*EDBUS, "--url", store, "consume", "t", "s", "--print", "--idle-exit", "0",
                               "--metrics-port", str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: --metrics-port: cannot serve metrics") and "Traceback" not in done.stderr
