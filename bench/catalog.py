"""Benchmark of course catalog propagation (docs/catalog.md): `.venv/bin/python bench/catalog.py`.

1. Propagation latency at a steady rate: one process publishes openedx-events catalog events (Studio's
   course created, rerun, catalog info changed, XBlock published; ``SignalPublisher``) at R events/s for D
   seconds: every 10 ms the events due (10 at 1,000/s), each stamped when it is encoded, in one durable
   transaction (one fsync per event would compete with the replica's fsyncs for the disk);
   another process runs the catalog service (``CatalogReplica``, key_ordered, 16 handler threads whose
   writes share commits, synchronous=FULL).
   Latency: event time (set when published) to the replica's commit, every event.
2. Rebuild: N courses (COURSE_CREATED + COURSE_CATALOG_INFO_CHANGED each, 2N events) on a topic, then a
   new subscription replays it into an empty replica (``rebuild``): seconds from the start to the last
   event applied.

``--url`` runs it on another store (e.g. ``pulsar://127.0.0.1:6650?admin=http://127.0.0.1:8080``; topics
get a fresh prefix); default: a fresh embedded store in a temporary folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from opaque_keys.edx.keys import CourseKey
from openedx_events.content_authoring.data import CourseCatalogData, CourseData, CourseScheduleData

from edbus import Bus, Mode
from edbus_services.catalog import CatalogReplica, SignalPublisher, rebuild
from edbus_services.catalog.planner import plan_events
from edbus_services.catalog.signals import COURSE_CATALOG_INFO_CHANGED, COURSE_CREATED

CONCURRENCY = 16  # handler threads of the replica process: more writes share each commit
TICK = 0.01  # the publisher sends what is due every 10 ms, in one transaction


def with_prefix(url: str, prefix: str) -> str:
    if url.startswith("pulsar://"):
        return f"{url}{'&' if '?' in url else '?'}prefix={prefix}-"
    return url


def replica_process(url: str, topic: str, path: str, durable: bool, ready: Any, stop: Any) -> None:
    bus = Bus.from_url(url, source="bench/catalog")
    replica = CatalogReplica(Path(path), "bench", durable=durable)
    consumer = bus.consumer(topic, "replica", mode=Mode.KEY_ORDERED, concurrency=CONCURRENCY)
    replica.register(consumer)
    threading.Thread(target=lambda: (stop.wait(), consumer.stop()), daemon=True).start()
    bus.backend.subscribe(consumer.topic, "replica", Mode.KEY_ORDERED, consumer.start)
    ready.set()
    consumer.run(install_signals=False)
    replica.close()
    bus.close()


def latency(url: str, folder: Path, rate: float, duration: float, durable: bool) -> dict[str, float]:
    topic = "catalog-latency"
    n = int(rate * duration)
    plan = plan_events(courses=max(1, n // 20), changes=n, poison=0, seed=7)[:n]
    path = folder / f"replica-{rate:g}.db"
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    child = ctx.Process(target=replica_process, args=(url, topic, str(path), durable, ready, stop))
    child.start()
    bus = Bus.from_url(url, source="openedx/cms/web")
    try:
        if not ready.wait(60):
            raise SystemExit("the replica process did not start")
        publisher = SignalPublisher(bus)
        last: dict[str, dt.datetime] = {}
        started = last_send = time.monotonic()
        sent = 0
        while sent < n:
            due = min(n, int((time.monotonic() - started) * rate) + 1)
            if due <= sent:
                time.sleep(max(0.0, started + sent / rate - time.monotonic()))
                continue
            time.sleep(max(0.0, last_send + TICK - time.monotonic()))  # at most one transaction per tick
            last_send = time.monotonic()
            due = min(n, int((last_send - started) * rate) + 1)
            records = []
            for planned in plan[sent:due]:  # what is due now: one transaction (a group commit)
                when = dt.datetime.now(dt.UTC)
                previous = last.get(planned.course_key)
                if previous is not None and when <= previous:
                    when = previous + dt.timedelta(microseconds=1)
                last[planned.course_key] = when
                records.append(publisher.record(topic, planned.event_type, planned.data, time=when))
            publisher.publish(topic, records)
            sent = due
        achieved = n / (time.monotonic() - started)
        replica = CatalogReplica(path)
        deadline = time.monotonic() + 120
        while len(replica.applied_ids()) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        latencies = sorted(replica.latencies())
        replica.close()
    finally:
        stop.set()
        child.join(60)
        bus.close()
    q = statistics.quantiles(latencies, n=100)
    return {"rate": rate, "achieved": achieved, "events": len(latencies), "p50": q[49] * 1000,
            "p99": q[98] * 1000, "max": latencies[-1] * 1000}


def course_events(publisher: SignalPublisher, topic: str, i: int) -> list[Any]:
    key = CourseKey.from_string(f"course-v1:Org{i % 97}+C{i}+2025_T{i % 3 + 1}")
    start = dt.datetime(2025, 1, 6, tzinfo=dt.UTC) + dt.timedelta(days=i % 365)
    info = CourseCatalogData(course_key=key, name=f"Course {i}", hidden=i % 20 == 0, schedule_data=CourseScheduleData(
        start=start, pacing="self" if i % 3 else "instructor", end=start + dt.timedelta(weeks=10)))
    now = dt.datetime.now(dt.UTC)
    return [publisher.record(topic, COURSE_CREATED.event_type, {"course": CourseData(course_key=key)}, time=now),
            publisher.record(topic, COURSE_CATALOG_INFO_CHANGED.event_type, {"catalog_info": info},
                             time=now + dt.timedelta(microseconds=1))]


def rebuild_time(url: str, folder: Path, courses: int, durable: bool) -> dict[str, float]:
    topic = "catalog-rebuild"
    with Bus.from_url(url, source="openedx/cms/web") as bus:
        publisher = SignalPublisher(bus)
        started = time.monotonic()
        batch: list[Any] = []
        for i in range(courses):
            batch += course_events(publisher, topic, i)
            if len(batch) >= 1000 or i == courses - 1:
                publisher.publish(topic, batch)
                batch = []
        published = time.monotonic() - started
        result = rebuild(bus, topic, folder / f"rebuilt-{uuid.uuid4().hex[:6]}.db",
                         subscription=f"rebuild-{uuid.uuid4().hex[:6]}", durable=durable, keep_subscription=False)
    assert result.with_catalog_info == courses, result
    return {"courses": courses, "events": result.events, "publish_s": published, "rebuild_s": result.seconds,
            "events_per_s": result.events / result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="store URL (default: a fresh embedded store)")
    parser.add_argument("--rates", default="500,1000", help="events/s of the latency runs, comma-separated")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each latency run")
    parser.add_argument("--courses", type=int, default=100_000, help="courses of the rebuild run (0: skip)")
    parser.add_argument("--fast-replica", action="store_true",
                        help="latency runs: the replica commits with synchronous=NORMAL (default FULL)")
    parser.add_argument("--durable-rebuild", action="store_true",
                        help="rebuild with synchronous=FULL commits (default NORMAL)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edbus-bench-catalog-") as tmp:
        folder = Path(tmp)
        for rate in [float(r) for r in args.rates.split(",") if r]:
            url = with_prefix(args.url, uuid.uuid4().hex[:8]) if args.url else f"sqlite:///{folder}/lat-{rate:g}.db"
            r = latency(url, folder, rate, args.duration, not args.fast_replica)
            print(f"latency at {r['rate']:g} events/s (achieved {r['achieved']:.0f}/s, {r['events']:.0f} events, "
                  f"replica synchronous={'NORMAL' if args.fast_replica else 'FULL'}): p50 {r['p50']:.1f} ms, "
                  f"p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms", flush=True)
        if args.courses:
            url = with_prefix(args.url, uuid.uuid4().hex[:8]) if args.url else f"sqlite:///{folder}/rebuild.db"
            r = rebuild_time(url, folder, args.courses, args.durable_rebuild)
            print(f"rebuild of {r['courses']:,.0f} courses ({r['events']:,.0f} events, published in "
                  f"{r['publish_s']:.1f} s): {r['rebuild_s']:.1f} s, {r['events_per_s']:,.0f} events/s "
                  f"({'synchronous=FULL' if args.durable_rebuild else 'synchronous=NORMAL'})", flush=True)


if __name__ == "__main__":
    main()
