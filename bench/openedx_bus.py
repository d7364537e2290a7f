"""One side of `bench/openedx_vs_redis.py`: an Open edX event bus driven through openedx-events only.

The same code measures edbus (run by edbus's venv) and edx-event-bus-redis (run by the venv of
`scripts/redis.sh`): the bus is whatever EVENT_BUS_PRODUCER / EVENT_BUS_CONSUMER name, as in a service.
The real COURSE_CATALOG_INFO_CHANGED signal, metadata built per call (as a service does). Prints one JSON
object. Modes:
  send     N sends by one caller; events/s
  consume  the N events already on the topic, re-emitted as signals to one receiver; events/s to the Nth
  listen   consume, recording publish→receiver latency (metadata time to the receiver's call) of N events
  pace     N sends at a fixed rate (the producer side of `listen`, in another process)
  floor    openedx-events' own work per event, no bus at all: the sender's (metadata, `to_dict`, Avro
           write) and the receiver's (Avro read, `from_dict`, `send_event_with_custom_metadata` to one
           receiver); events/s of each, what no bus driven through openedx-events can exceed
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import threading
import time
from typing import Any

import django
from django.conf import settings

TOPIC = "course-catalog"
KEY = "catalog_info.course_key"
TYPE = "org.openedx.content_authoring.course.catalog_info.changed.v1"


def setup(bus: str, url: str) -> None:
    common: dict[str, Any] = {
        "USE_TZ": True, "DEBUG": False, "DATABASES": {}, "LOGGING_CONFIG": None,
        "EVENT_BUS_PRODUCER_CONFIG": {TYPE: {TOPIC: {"event_key_field": KEY, "enabled": True}}}}
    if bus == "edbus":
        settings.configure(INSTALLED_APPS=["openedx_events"], EDBUS_URL=url,
                           EVENT_BUS_PRODUCER="edbus.openedx.create_producer",
                           EVENT_BUS_CONSUMER="edbus.openedx.EdbusConsumer", **common)
    else:
        settings.configure(INSTALLED_APPS=["openedx_events", "edx_event_bus_redis"],
                           EVENT_BUS_REDIS_CONNECTION_URL=url, EVENT_BUS_TOPIC_PREFIX="bench",
                           EVENT_BUS_REDIS_CONSUMER_POLL_TIMEOUT=1,
                           EVENT_BUS_PRODUCER="edx_event_bus_redis.create_producer",
                           EVENT_BUS_CONSUMER="edx_event_bus_redis.RedisEventConsumer", **common)
    django.setup()


def catalog_data(i: int) -> dict[str, Any]:
    from opaque_keys.edx.keys import CourseKey
    from openedx_events.content_authoring.data import CourseCatalogData, CourseScheduleData

    return {"catalog_info": CourseCatalogData(
        course_key=CourseKey.from_string(f"course-v1:edX+Bench{i % 100}+2024_T1"), name=f"Demo course {i}",
        schedule_data=CourseScheduleData(start=dt.datetime(2024, 3, 1, tzinfo=dt.UTC), pacing="instructor",
                                         end=dt.datetime(2024, 6, 1, tzinfo=dt.UTC), enrollment_start=None,
                                         enrollment_end=None), hidden=False, invitation_only=False)}


def send(n: int, rate: float | None = None) -> dict[str, float]:
    from openedx_events.content_authoring.signals import COURSE_CATALOG_INFO_CHANGED as SIGNAL
    from openedx_events.event_bus import get_producer

    producer = get_producer()
    events = [catalog_data(i) for i in range(n)]
    start = time.perf_counter()
    for i, data in enumerate(events):
        if rate is not None:  # paced: wait for this event's slot (a busy producer falls behind, never ahead)
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        producer.send(signal=SIGNAL, topic=TOPIC, event_key_field=KEY, event_data=data,
                      event_metadata=SIGNAL.generate_signal_metadata())
    return {"events_per_s": n / (time.perf_counter() - start)}


def consume(n: int, group: str, latency: bool) -> None:
    """Prints the result and ends the process once the Nth event arrived. The consumer loop runs in the
    main thread: the Redis consumer's per-message timeout uses SIGALRM, which only the main thread gets."""
    from openedx_events.content_authoring.signals import COURSE_CATALOG_INFO_CHANGED as SIGNAL
    from openedx_events.event_bus import make_single_consumer

    seen: list[float] = []
    done = threading.Event()

    def receiver(signal: Any, **kwargs: Any) -> None:
        seen.append(time.time() - kwargs["metadata"].time.timestamp() if latency else 0.0)
        if len(seen) == n:
            done.set()

    def report(start: float) -> None:
        if not done.wait(600):
            print(json.dumps({"error": f"only {len(seen)} of {n} events arrived within 600 s"}), flush=True)
            os._exit(1)
        elapsed = time.perf_counter() - start
        if latency:
            ordered = sorted(seen[n // 10:])  # the first tenth warms up (connections, caches)
            result = {"p50_ms": 1000 * ordered[len(ordered) // 2],
                      "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)], "max_ms": 1000 * ordered[-1]}
        else:
            result = {"events_per_s": n / elapsed}
        print(json.dumps(result), flush=True)
        os._exit(0)  # the consumer loop never returns by itself

    SIGNAL.connect(receiver, dispatch_uid="bench")
    # the --extra options each bus takes: Redis reads its stream's backlog from the start
    options: dict[str, Any] = ({"check_backlog": True, "consumer_name": "bench-1"}
                               if settings.EVENT_BUS_CONSUMER.startswith("edx_") else {"start": "earliest"})
    consumer = make_single_consumer(topic=TOPIC, group_id=group, **options)
    threading.Thread(target=report, args=(time.perf_counter(),), daemon=True).start()
    if latency:
        print(json.dumps({"ready": True}), flush=True)  # the driver starts the paced producer now
    consumer.consume_indefinitely()
    raise SystemExit("the consumer loop returned")


def floor(n: int) -> dict[str, float]:
    import io

    import fastavro
    from openedx_events.content_authoring.signals import COURSE_CATALOG_INFO_CHANGED as SIGNAL
    from openedx_events.event_bus.avro.deserializer import AvroSignalDeserializer
    from openedx_events.event_bus.avro.serializer import AvroSignalSerializer

    serializer, deserializer = AvroSignalSerializer(SIGNAL), AvroSignalDeserializer(SIGNAL)
    schema = fastavro.parse_schema(serializer.schema)
    events = [catalog_data(i) for i in range(n)]
    received = 0

    def receiver(signal: Any, **kwargs: Any) -> None:
        nonlocal received
        received += 1

    SIGNAL.connect(receiver, dispatch_uid="bench-floor")
    payloads: list[bytes] = []
    start = time.perf_counter()
    for data in events:
        SIGNAL.generate_signal_metadata()
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, serializer.to_dict(data))
        payloads.append(out.getvalue())
    sender = n / (time.perf_counter() - start)
    metadata = [SIGNAL.generate_signal_metadata() for _ in range(n)]
    start = time.perf_counter()
    for payload, meta in zip(payloads, metadata, strict=True):
        data = deserializer.from_dict(fastavro.schemaless_reader(io.BytesIO(payload), schema, None))
        SIGNAL.send_event_with_custom_metadata(meta, **data)
    receiving = n / (time.perf_counter() - start)
    assert received == n
    return {"sender_per_s": sender, "receiver_per_s": receiving}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bus", choices=["edbus", "redis"])
    parser.add_argument("mode", choices=["send", "consume", "listen", "pace", "floor"])
    parser.add_argument("--url", required=True, help="EDBUS_URL, or the Redis connection URL")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s of the paced producer")
    parser.add_argument("--group", default="bench-consumer")
    args = parser.parse_args()
    setup(args.bus, args.url)
    if args.mode == "floor":
        print(json.dumps(floor(args.events)), flush=True)
        return
    if args.mode in ("consume", "listen"):
        consume(args.events, args.group, latency=args.mode == "listen")
    print(json.dumps(send(args.events, args.rate if args.mode == "pace" else None)), flush=True)


if __name__ == "__main__":
    main()
