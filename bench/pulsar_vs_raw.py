"""Benchmark of the Pulsar backend against raw pulsar-client on the same broker, same messages:
`.venv/bin/python bench/pulsar_vs_raw.py [--url pulsar://127.0.0.1:6650]` (start a broker first:
`scripts/pulsar.sh start`). Results go to docs/benchmarks.md by hand.

(Not named bench/pulsar.py: run as a script, that name would shadow the ``pulsar`` package.)

Both sides send the same ~1 KB messages (edbus's encoded Avro payload and its envelope headers as
properties), batching off, each send acked by the broker (journalSyncData on): single sync sends,
pipelined sends of 100 (send_async + flush: edbus's publish_many), and consume + ack (the consumer
connecting after the sends on both sides, Key_Shared, receive queue 1,000). The sends of 100 are
measured in alternating rounds (``--rounds``: raw, edbus, raw, edbus, ...) and summed, so that a change of
pace of the shared machine or broker during the run weighs on both sides alike. Then end-to-end
latency at a fixed rate (1,000 events/s: every 10 ms a send of 10, pipelined and flushed as above, on a
fresh topic with its consumer already running): from handing the send to the client to the consumer
holding the message (raw: ``receive`` returned; edbus: the handler called), p50 and p99, the first 10 %
left out as warm-up.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

from edbus import Bus, Event
from edbus.backends.pulsar import PulsarBackend
from edbus.backends.pulsar.messages import properties
from edbus.bus.consumer import Consumer
from workload import EVENT, payload  # bench/workload.py: the scripts run as python bench/<name>.py


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s ({seconds * 1000 / n:.2f} ms each)"


RATE = 1000  # events/s of the latency run
TICK = 10  # events sent together every TICK / RATE seconds


def paced(n: int, send: Any) -> list[float]:
    """Send ``n`` events at RATE, TICK at a time (``send(first, end)``); returns each one's send time."""
    sent = [0.0] * n
    start = time.perf_counter()
    for base in range(0, n, TICK):
        delay = start + base / RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        now = time.perf_counter()
        end = min(n, base + TICK)
        sent[base:end] = [now] * (end - base)
        send(base, end)
    return sent


def latency(sent: list[float], received: dict[int, float]) -> str:
    n = len(sent)
    assert len(received) == n, f"{len(received)} of {n} events received"
    skip = n // 10  # warm-up
    ms = sorted((received[i] - sent[i]) * 1000 for i in range(skip, n))
    return f"p50 {ms[len(ms) // 2]:.1f} ms, p99 {ms[int(len(ms) * 0.99)]:.1f} ms"


def raw_latency(service: str, topic: str, body: bytes, props: dict[str, str], n: int) -> str:
    import pulsar

    client = pulsar.Client(service, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    consumer = client.subscribe(topic, "bench", consumer_type=pulsar.ConsumerType.KeyShared,
                                initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(topic, batching_enabled=False, block_if_queue_full=True)
    received: dict[int, float] = {}

    def consume() -> None:
        for _ in range(n):
            msg = consumer.receive(10_000)
            received[int(msg.properties()["seq"])] = time.perf_counter()
            consumer.acknowledge(msg)

    thread = threading.Thread(target=consume)
    thread.start()

    def send(first: int, end: int) -> None:
        for i in range(first, end):
            producer.send_async(body, lambda *_: None, properties={**props, "seq": str(i)},
                                partition_key=f"k{i % 100}")
        producer.flush()

    sent = paced(n, send)
    thread.join()
    client.close()
    return latency(sent, received)


def edbus_latency(url: str, n: int) -> str:
    bus = Bus.from_url(url)
    consumer: Consumer = bus.consumer("latency", "bench")
    received: dict[int, float] = {}

    def handle(event: Event[Any]) -> None:
        received[event.data.user_id] = time.perf_counter()

    consumer.handler(EVENT)(handle)
    bus.backend.subscribe(bus.topic("latency"), "bench", __import__("edbus").backends.Mode.KEY_ORDERED,
                          __import__("edbus").backends.StartAt())
    thread = threading.Thread(target=consumer.run, kwargs={"max_events": n, "install_signals": False})
    thread.start()
    sent = paced(n, lambda first, end: bus.publish_many("latency", [(EVENT, payload(i)) for i in range(first, end)]))
    thread.join()
    bus.close()
    return latency(sent, received)


class RawSide:
    """The raw client: sends of prepared bytes, ``receive`` + ``acknowledge``."""

    def __init__(self, service: str, topic: str, body: bytes, props: dict[str, str]) -> None:
        import pulsar

        self.client = pulsar.Client(service, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
        self.producer = self.client.create_producer(topic, batching_enabled=False, block_if_queue_full=True)
        self.topic, self.body, self.props = topic, body, props
        self.consumer: Any = None
        self.sent = 0

    def single(self, n: int) -> None:
        for i in range(n):
            self.producer.send(self.body, properties=self.props, partition_key=f"k{i % 100}")

    def batched(self, n: int) -> None:
        for base in range(0, n, 100):
            for i in range(base, base + 100):
                self.producer.send_async(self.body, lambda *_: None, properties=self.props,
                                         partition_key=f"k{i % 100}")
            self.producer.flush()

    def consume(self, n: int) -> None:
        import pulsar

        if self.consumer is None:
            # the consumer connects after the sends, as edbus's does (``Consumer.run``): no head start on
            # a receive queue filled while publishing, and no receiving competing with the sends
            self.consumer = self.client.subscribe(self.topic, "bench", consumer_type=pulsar.ConsumerType.KeyShared,
                                                  initial_position=pulsar.InitialPosition.Earliest,
                                                  receiver_queue_size=1000)
        for _ in range(n):
            self.consumer.acknowledge(self.consumer.receive(10_000))

    def close(self) -> None:
        self.client.close()


class EdbusSide:
    """edbus: ``bus.publish`` / ``bus.publish_many`` of payload objects, ``Consumer.run`` with a no-op handler."""

    def __init__(self, url: str) -> None:
        from edbus.backends import Mode, StartAt

        self.bus = Bus.from_url(url)
        self.bus.backend.subscribe(self.bus.topic("bench"), "bench", Mode.KEY_ORDERED, StartAt())
        self.consumer: Consumer = self.bus.consumer("bench", "bench")
        self.consumer.handler(EVENT)(lambda _: None)
        self.next = 0

    def single(self, n: int) -> None:
        for i in range(n):
            self.bus.publish("bench", EVENT, payload(i))

    def batched(self, n: int) -> None:
        for base in range(0, n, 100):
            self.bus.publish_many("bench", [(EVENT, payload(i)) for i in range(base, base + 100)])

    def consume(self, n: int) -> None:
        self.consumer.run(max_events=n, install_signals=False)

    def close(self) -> None:
        self.bus.close()


def compare(sides: dict[str, Any], single: int, batched: int, rounds: int) -> dict[str, dict[str, str]]:
    """Both sides measured in alternating rounds (raw, edbus, raw, edbus, ...), their times summed: a
    change of the machine's or the broker's pace during the run weighs on both alike."""
    out: dict[str, dict[str, str]] = {name: {} for name in sides}
    for name, side in sides.items():
        start = time.perf_counter()
        side.single(single)
        out[name]["single send"] = rate(single, time.perf_counter() - start)
    share = batched // rounds // 100 * 100  # events of one round of sends (whole sends of 100)
    spent = dict.fromkeys(sides, 0.0)
    for _ in range(rounds):
        for name, side in sides.items():
            start = time.perf_counter()
            side.batched(share)
            spent[name] += time.perf_counter() - start
    for name in sides:
        out[name]["sends of 100"] = rate(share * rounds, spent[name])
    # consume + ack in one go per side: ``Consumer.run`` is a long-running loop (a run subscribes, which
    # takes admin calls, and starts its handler threads), not something to start per round
    for name, side in sides.items():
        start = time.perf_counter()
        side.consume(single + share * rounds)
        out[name]["consume + ack"] = rate(single + share * rounds, time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="pulsar://127.0.0.1:6650")
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--batched", type=int, default=20000)
    parser.add_argument("--latency", type=int, default=5000, help="events of the latency run (at 1,000/s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the sends of 100")
    args = parser.parse_args()
    prefix = f"bench{uuid.uuid4().hex[:8]}-"
    sep = "&" if "?" in args.url else "?"
    url = f"{args.url}{sep}prefix={prefix}"
    bus = Bus.from_url(url)
    assert isinstance(bus.backend, PulsarBackend)
    record = bus.codec.encode(bus.topic("bench"), EVENT, payload(0))
    # the raw side sends what edbus puts on the wire: the payload, and as properties the envelope headers
    # after the publish middleware (the trace context) with the event id and type (docs/pulsar.md)
    wire = properties(bus.middleware.before_publish(bus.topic("bench"), [record])[0])
    service = bus.backend.config.service_url
    raw_topic = bus.backend.config.full(f"{prefix}raw")
    bus.backend.admin.create_topic(f"{prefix}raw")  # the broker creates no subscriptions on its own
    bus.backend.admin.create_subscription(f"{prefix}raw", "bench", True, {})
    bus.backend.admin.create_topic(f"{prefix}rawlatency")
    bus.backend.admin.create_subscription(f"{prefix}rawlatency", "bench", True, {})
    bus.close()
    headers = sum(len(k) + len(v) for k, v in wire.items())
    print(f"message: {len(record.payload)} B payload + {len(wire)} properties of {headers} B "
          f"({len(record.payload) + headers} B), batching off, broker acks after the journal fsync")
    sides = {"raw pulsar-client": RawSide(service, raw_topic, record.payload, wire), "edbus": EdbusSide(url)}
    try:
        results = compare(sides, args.single, args.batched, args.rounds)
    finally:
        for side in sides.values():
            side.close()
    results["raw pulsar-client"]["latency @1k/s"] = raw_latency(
        service, bus.backend.config.full(f"{prefix}rawlatency"), record.payload, wire, args.latency)
    results["edbus"]["latency @1k/s"] = edbus_latency(url, args.latency)
    for name, figures in results.items():
        for what, figure in figures.items():
            print(f"{name:18} {what:14} {figure}")
    raw_figures, edbus_figures = results["raw pulsar-client"], results["edbus"]
    for what in ("sends of 100", "consume + ack"):
        share = float(edbus_figures[what].split("/")[0].replace(",", "")) / float(
            raw_figures[what].split("/")[0].replace(",", ""))
        print(f"edbus / raw        {what:14} {share:.0%}")


if __name__ == "__main__":
    main()
