"""Benchmark of the openedx-events interface on the embedded store: `.venv/bin/python bench/openedx.py`.

With the real COURSE_CATALOG_INFO_CHANGED signal: one caller's ``EventBusProducer.send`` (each durable
when it returns), the same through ``send_event`` (openedx-events' own handler calls the producer, as in a
service), and the consumer re-emitting signals (decode, ``prepare_for_new_work_cycle``,
``send_event_with_custom_metadata`` to one receiver, ack). Results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

import django
from django.conf import settings

TOPIC = "course-catalog"
KEY = "catalog_info.course_key"
TYPE = "org.openedx.content_authoring.course.catalog_info.changed.v1"


def setup(url: str) -> None:
    settings.configure(
        INSTALLED_APPS=["openedx_events"], USE_TZ=True, DEBUG=False, EDBUS_URL=url,
        EVENT_BUS_PRODUCER="edbus.openedx.create_producer", EVENT_BUS_CONSUMER="edbus.openedx.EdbusConsumer",
        EVENT_BUS_PRODUCER_CONFIG={TYPE: {TOPIC: {"event_key_field": KEY, "enabled": True}}},
        DATABASES={}, LOGGING_CONFIG=None)
    django.setup()


def catalog_data(i: int) -> dict[str, Any]:
    from opaque_keys.edx.keys import CourseKey
    from openedx_events.content_authoring.data import CourseCatalogData, CourseScheduleData

    return {"catalog_info": CourseCatalogData(
        course_key=CourseKey.from_string(f"course-v1:edX+Bench{i % 100}+2024_T1"), name=f"Demo course {i}",
        schedule_data=CourseScheduleData(start=dt.datetime(2024, 3, 1, tzinfo=dt.UTC), pacing="instructor",
                                         end=dt.datetime(2024, 6, 1, tzinfo=dt.UTC), enrollment_start=None,
                                         enrollment_end=None), hidden=False, invitation_only=False)}


def bench_send(n: int) -> float:
    from openedx_events.content_authoring.signals import COURSE_CATALOG_INFO_CHANGED as SIGNAL

    from edbus.openedx import create_producer

    producer = create_producer()
    events = [(catalog_data(i), SIGNAL.generate_signal_metadata()) for i in range(n)]
    start = time.perf_counter()
    for data, metadata in events:
        producer.send(signal=SIGNAL, topic=TOPIC, event_key_field=KEY, event_data=data, event_metadata=metadata)
    return n / (time.perf_counter() - start)


def bench_send_event(n: int) -> float:
    from openedx_events.content_authoring.signals import COURSE_CATALOG_INFO_CHANGED as SIGNAL

    events = [catalog_data(i) for i in range(n)]
    start = time.perf_counter()
    for data in events:
        SIGNAL.send_event(**data)
    return n / (time.perf_counter() - start)


def bench_consume(n: int) -> float:
    from openedx_events.content_authoring.signals import COURSE_CATALOG_INFO_CHANGED as SIGNAL

    from edbus.openedx import EdbusConsumer

    received = []

    def receiver(signal: Any, **kwargs: Any) -> None:
        received.append(kwargs["metadata"].id)

    SIGNAL.connect(receiver, dispatch_uid="bench")
    consumer = EdbusConsumer(topic=TOPIC, group_id="bench-consumer", max_events=n)
    start = time.perf_counter()
    consumer.consume_indefinitely()
    elapsed = time.perf_counter() - start
    assert len(received) == n, len(received)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edbus-bench-", dir=Path.cwd()) as folder:
        setup(f"sqlite:///{folder}/bus.db")
        send = bench_send(args.events)
        print(f"EventBusProducer.send, one caller, durable:        {send:9,.0f} events/s")
        send_event = bench_send_event(args.events)
        print(f"signal.send_event -> producer, one caller, durable:{send_event:9,.0f} events/s")
        consume = bench_consume(2 * args.events)
        print(f"consumer re-emitting the signal (1 receiver):      {consume:9,.0f} events/s")
        from edbus.openedx.config import close_bus

        close_bus()


if __name__ == "__main__":
    main()
