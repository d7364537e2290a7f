"""Benchmark of the Pulsar backend against raw pulsar-client on the same broker, same messages:
`.venv/bin/python bench/pulsar_vs_raw.py [--url pulsar://127.0.0.1:6650]` (start a broker first:
`scripts/pulsar.sh start`). Results go to docs/benchmarks.md by hand.

(Not named bench/pulsar.py: run as a script, that name would shadow the ``pulsar`` package.)

Both sides send the same ~1 KB messages (edbus's encoded Avro payload and its envelope headers as
properties), batching off, each send acked by the broker (journalSyncData on): single sync sends,
pipelined sends of 100 (send_async + flush: edbus's publish_many), and consume + ack.
"""

from __future__ import annotations

import argparse
import time
import uuid

from edbus import Bus, Event
from edbus.backends.pulsar import PulsarBackend
from edbus.bus.consumer import Consumer

try:
    from bench.embedded import EVENT, payload
except ImportError:  # run as a script from bench/
    from embedded import EVENT, payload  # type: ignore[import-not-found,no-redef]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s ({seconds * 1000 / n:.2f} ms each)"


def raw(service: str, topic: str, body: bytes, props: dict[str, str], single: int, batched: int) -> dict[str, str]:
    import pulsar

    client = pulsar.Client(service, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    consumer = client.subscribe(topic, "bench", consumer_type=pulsar.ConsumerType.KeyShared,
                                initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(topic, batching_enabled=False, block_if_queue_full=True)
    out = {}
    start = time.perf_counter()
    for i in range(single):
        producer.send(body, properties=props, partition_key=f"k{i % 100}")
    out["single send"] = rate(single, time.perf_counter() - start)
    start = time.perf_counter()
    for base in range(0, batched, 100):
        for i in range(base, base + 100):
            producer.send_async(body, lambda *_: None, properties=props, partition_key=f"k{i % 100}")
        producer.flush()
    out["sends of 100"] = rate(batched, time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(single + batched):
        consumer.acknowledge(consumer.receive(10_000))
    out["consume + ack"] = rate(single + batched, time.perf_counter() - start)
    client.close()
    return out


def edbus(url: str, single: int, batched: int) -> dict[str, str]:
    bus = Bus.from_url(url)
    out = {}
    bus.backend.subscribe(bus.topic("bench"), "bench", __import__("edbus").backends.Mode.KEY_ORDERED,
                          __import__("edbus").backends.StartAt())
    start = time.perf_counter()
    for i in range(single):
        bus.publish("bench", EVENT, payload(i))
    out["single send"] = rate(single, time.perf_counter() - start)
    start = time.perf_counter()
    for base in range(0, batched, 100):
        bus.publish_many("bench", [(EVENT, payload(i)) for i in range(base, base + 100)])
    out["sends of 100"] = rate(batched, time.perf_counter() - start)
    consumer: Consumer = bus.consumer("bench", "bench")
    seen = [0]

    def handle(_: Event[object]) -> None:
        seen[0] += 1

    consumer.handler(EVENT)(handle)
    start = time.perf_counter()
    consumer.run(max_events=single + batched, install_signals=False)
    out["consume + ack"] = rate(single + batched, time.perf_counter() - start)
    bus.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="pulsar://127.0.0.1:6650")
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--batched", type=int, default=20000)
    args = parser.parse_args()
    prefix = f"bench{uuid.uuid4().hex[:8]}-"
    sep = "&" if "?" in args.url else "?"
    url = f"{args.url}{sep}prefix={prefix}"
    bus = Bus.from_url(url)
    assert isinstance(bus.backend, PulsarBackend)
    record = bus.codec.encode(bus.topic("bench"), EVENT, payload(0))
    service = bus.backend.config.service_url
    raw_topic = bus.backend.config.full(f"{prefix}raw")
    bus.backend.admin.create_topic(f"{prefix}raw")  # the broker creates no subscriptions on its own
    bus.backend.admin.create_subscription(f"{prefix}raw", "bench", True, {})
    bus.close()
    print(f"message: {len(record.payload)} B payload + {record.size - len(record.payload)} B of headers "
          f"({record.size} B), batching off, broker acks after the journal fsync")
    results = {"raw pulsar-client": raw(service, raw_topic, record.payload, dict(record.headers),
                                        args.single, args.batched),
               "edbus": edbus(url, args.single, args.batched)}
    for name, figures in results.items():
        for what, figure in figures.items():
            print(f"{name:18} {what:14} {figure}")


if __name__ == "__main__":
    main()
