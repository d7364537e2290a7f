"""Benchmark of the embedded store: `make bench` (or `.venv/bin/python bench/embedded.py`).

Prints, for 1 KB events (Avro payload + envelope headers): the machine's raw fsync rate, single durable
publish, batched durable publish (one producer; two producer processes), consume + ack per consumer
process, and publish→handler latency at a fixed 1,000 events/s with producer and consumer in separate
processes. Results go to docs/benchmarks.md by hand, with this command.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

from edbus import Bus, Event
from edbus.bus.metrics import percentile
from workload import EVENT, Enrollment, payload

TOPIC = "bench"


def event_size(bus: Bus) -> int:
    return bus.codec.encode(TOPIC, EVENT, payload(0)).size


def fsync_rate(folder: Path, n: int = 2000) -> float:
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    start = time.perf_counter()
    for _ in range(n):
        os.write(fd, b"x" * 1024)
        os.fsync(fd)
    rate = n / (time.perf_counter() - start)
    os.close(fd)
    path.unlink()
    return rate


def single_publish(url: str, n: int) -> float:
    with Bus.from_url(url) as bus:
        start = time.perf_counter()
        for i in range(n):
            bus.publish(TOPIC, EVENT, payload(i))
        return n / (time.perf_counter() - start)


def _batched(url: str, n: int, batch: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    with Bus.from_url(url) as bus:
        items = [(EVENT, payload(i)) for i in range(batch)]
        bus.publish_many(TOPIC, items[:10])
        out.put("ready")
        start = time.perf_counter()
        for _ in range(n // batch):
            bus.publish_many(TOPIC, items)
        out.put((start, time.perf_counter()))


def batched_publish(url: str, n: int, batch: int, producers: int) -> float:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_batched, args=(url, n // producers, batch, out)) for _ in range(producers)]
    for p in procs:
        p.start()
    for _ in procs:
        out.get(timeout=60)
    spans = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return (n // producers // batch * batch * producers) / (max(e for _, e in spans) - min(s for s, _ in spans))


def _consume(url: str, subscription: str, n: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    with Bus.from_url(url, create=False) as bus:
        consumer = bus.consumer(TOPIC, subscription, concurrency=4, batch=500)
        consumer.handler(EVENT)(lambda e: None)
        start = time.perf_counter()
        done = consumer.run(max_events=n, install_signals=False)
        out.put(done / (time.perf_counter() - start))


def consume_and_ack(url: str, n: int) -> float:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    p = ctx.Process(target=_consume, args=(url, f"consume-{time.time_ns()}", n, out))
    p.start()
    rate = out.get(timeout=600)
    p.join()
    return float(rate)


def _latency_consumer(url: str, n: int, ready: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    with Bus.from_url(url) as bus:
        consumer = bus.consumer("latency", "lat", start="latest", concurrency=4)
        samples: list[float] = []

        @consumer.handler(EVENT)
        def handle(event: Event[Enrollment]) -> None:
            samples.append(time.time() - event.envelope.time.timestamp())

        bus.backend.subscribe("latency", "lat", consumer.mode, consumer.start)
        ready.set()
        consumer.run(max_events=n, install_signals=False)
        out.put(samples)


def latency(url: str, rate: int, seconds: float) -> tuple[float, float, float, float, float]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    ready = ctx.Event()
    n = int(rate * seconds)
    p = ctx.Process(target=_latency_consumer, args=(url, n, ready, out))
    p.start()
    ready.wait(60)
    calls: list[float] = []
    with Bus.from_url(url) as bus:
        start = time.perf_counter()
        for i in range(n):
            due = start + i / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.0005))
            bus.publish("latency", EVENT, payload(i))
            calls.append(time.perf_counter() - now)
    samples = out.get(timeout=120)
    p.join()
    samples = samples[int(len(samples) * 0.05):]  # drop the warm-up
    calls = calls[int(len(calls) * 0.05):]
    return (percentile(samples, 50) * 1000, percentile(samples, 99) * 1000, statistics.mean(samples) * 1000,
            percentile(calls, 50) * 1000, percentile(calls, 99) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="folder for the store (default: a temp folder on the "
                        "working directory's disk)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", choices=["publish", "consume", "latency"], default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="edbus-bench-", dir=args.dir or os.getcwd()))
    url = f"sqlite:///{folder}/bench.db"
    with Bus.from_url(url) as bus:
        size = event_size(bus)
    print(f"store: {folder}/bench.db   event size: {size} bytes   cores: {os.cpu_count()}")
    print(f"raw fsync (1 KB write + fsync):      {fsync_rate(folder):>10,.0f} /s")
    if args.only in (None, "publish", "consume"):
        print(f"single durable publish:              {single_publish(url, args.single):>10,.0f} events/s")
        for producers in (1, 2):
            rate = batched_publish(url, args.events, args.batch, producers)
            print(f"batched publish ({args.batch}/txn, {producers} producer(s)): {rate:>10,.0f} events/s")
    if args.only in (None, "consume"):
        print(f"consume + ack (1 consumer process):  {consume_and_ack(url, args.events):>10,.0f} events/s")
    if args.only in (None, "latency"):
        p50, p99, mean, call50, call99 = latency(url, args.rate, args.seconds)
        print(f"publish→handler at {args.rate}/s: p50 {p50:.2f} ms   p99 {p99:.2f} ms   mean {mean:.2f} ms")
        print(f"  of which the durable publish call:  p50 {call50:.2f} ms   p99 {call99:.2f} ms")
    for f in folder.glob("bench.db*"):
        if f.is_dir():
            for g in f.iterdir():
                g.unlink()
            f.rmdir()
        else:
            f.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
