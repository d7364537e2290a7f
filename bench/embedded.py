"""Benchmark of the embedded store: `make bench` (or `.venv/bin/python bench/embedded.py`).

Prints, for 1 KB events (Avro payload + envelope headers): the machine's raw fsync rate, single durable
publish against SQLite's own one-row-per-commit rate (WAL, synchronous=FULL, a row of the event's size;
measured in alternating rounds, so that both see the same disk), single durable publishes from 8 threads
and from 4 processes, batched durable publish (one producer; two producer processes), consume + ack per
consumer process, and publish→handler latency at a fixed 1,000 events/s with producer and consumer in
separate processes. Results go to docs/benchmarks.md by hand, with this command.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edbus import Bus, Event
from edbus.bus.metrics import percentile
from store_schema import EdbusSchemaRows
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


class SqliteRows:
    """SQLite's own rate for the same durable work: one row of ``size`` bytes per commit, WAL,
    synchronous=FULL, SQLite's default checkpointing."""

    def __init__(self, path: Path, size: int) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        self.row = (os.urandom(size),)

    def rate(self, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            self.db.execute("INSERT INTO t(data) VALUES (?)", self.row)
        return n / (time.perf_counter() - start)


def encode_cost(bus: Bus, n: int = 20_000) -> float:
    """Seconds per event of the codec alone (validation, Avro, envelope headers): Python that every
    typed publish runs, whatever the store."""
    payloads = [payload(i) for i in range(n)]
    start = time.perf_counter()
    for p in payloads:
        bus.codec.encode(TOPIC, EVENT, p)
    return (time.perf_counter() - start) / n


def single_vs_sqlite(folder: Path, url: str, size: int, n: int,
                     rounds: int) -> tuple[list[float], list[float], list[float], float]:
    """Single durable publishes, SQLite one-row commits and the store's SQL alone (``EdbusSchemaRows``) in
    alternating rounds of ``n`` each (the disk's speed drifts on a shared machine: only figures taken side
    by side compare); and the codec's seconds per event."""
    rows = SqliteRows(folder / "sqlite-rows.db", size)
    edbus: list[float] = []
    sqlite: list[float] = []
    store: list[float] = []
    with Bus.from_url(url) as bus:
        for i in range(200):  # warm up both: schemas registered, WAL files created
            bus.publish(TOPIC, EVENT, payload(i))
        store_rows = EdbusSchemaRows(folder / "store-rows.db", [bus.codec.encode(TOPIC, EVENT, payload(i))
                                                                for i in range(200 + rounds * n)])
        rows.rate(200)
        store_rows.rate(200)
        for _ in range(rounds):
            sqlite.append(rows.rate(n))
            store.append(store_rows.rate(n))
            start = time.perf_counter()
            for i in range(n):
                bus.publish(TOPIC, EVENT, payload(i))
            edbus.append(n / (time.perf_counter() - start))
        encode = encode_cost(bus)
    rows.db.close()
    store_rows.db.close()
    return edbus, sqlite, store, encode


def threaded_publish(url: str, n: int, threads: int) -> float:
    """``threads`` threads of one process sharing one Bus, each publishing one event per call."""
    with Bus.from_url(url) as bus:
        bus.publish(TOPIC, EVENT, payload(0))
        gate = threading.Barrier(threads + 1)

        def run() -> None:
            gate.wait()
            for i in range(n // threads):
                bus.publish(TOPIC, EVENT, payload(i))

        workers = [threading.Thread(target=run) for _ in range(threads)]
        for w in workers:
            w.start()
        gate.wait()
        start = time.perf_counter()
        for w in workers:
            w.join()
        return n // threads * threads / (time.perf_counter() - start)


def _single(url: str, n: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    with Bus.from_url(url) as bus:
        bus.publish(TOPIC, EVENT, payload(0))
        out.put("ready")
        start = time.perf_counter()
        for i in range(n):
            bus.publish(TOPIC, EVENT, payload(i))
        out.put((start, time.perf_counter()))


def _timed_processes(target: Any, args: tuple[Any, ...], processes: int) -> float:
    """Run ``target(*args, out)`` in ``processes`` processes; seconds from the first one's start of work to
    the last one's end (each puts "ready", then its (start, end))."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=target, args=(*args, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    # a quick process may report its span before a slow one reports ready: keep the spans whatever the order
    spans = [item for item in (out.get(timeout=600) for _ in range(2 * processes)) if item != "ready"]
    for p in procs:
        p.join()
    return max(e for _, e in spans) - min(s for s, _ in spans)


def process_publish(url: str, n: int, processes: int) -> float:
    """``processes`` processes, each publishing one event per call."""
    return n // processes * processes / _timed_processes(_single, (url, n // processes), processes)


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
    seconds = _timed_processes(_batched, (url, n // producers, batch), producers)
    return (n // producers // batch * batch * producers) / seconds


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
    parser.add_argument("--single", type=int, default=2_000, help="single publishes per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of single publish and "
                        "SQLite one-row commits")
    parser.add_argument("--concurrent", type=int, default=10_000, help="single publishes by 8 threads, "
                        "and by 4 processes")
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
        edbus, sqlite, store, encode = single_vs_sqlite(folder, url, size, args.single, args.rounds)
        ratios = sorted(e / s for e, s in zip(edbus, sqlite, strict=True))
        print(f"single durable publish:              {statistics.median(edbus):>10,.0f} events/s  "
              f"(rounds: {', '.join(f'{r:,.0f}' for r in edbus)})")
        print(f"SQLite one {size}-byte row per commit: {statistics.median(sqlite):>10,.0f} rows/s    "
              f"(rounds: {', '.join(f'{r:,.0f}' for r in sqlite)})")
        print(f"  single publish / SQLite, per round: median {statistics.median(ratios):.0%} "
              f"(range {ratios[0]:.0%}-{ratios[-1]:.0%})")
        print(f"the store's SQL alone (edbus schema): {statistics.median(store):>10,.0f} rows/s    "
              f"(rounds: {', '.join(f'{r:,.0f}' for r in store)})")
        schema = sorted(t / s for t, s in zip(store, sqlite, strict=True))
        # a publish cannot be faster than its SQL plus the codec's Python, both measured here
        ceiling = sorted(1 / (1 / t + encode) / s for t, s in zip(store, sqlite, strict=True))
        print(f"  store SQL / SQLite, per round:      median {statistics.median(schema):.0%} "
              f"(range {schema[0]:.0%}-{schema[-1]:.0%})")
        print(f"  codec alone: {encode * 1e6:.1f} us/event; SQL + codec / SQLite (the ceiling of a single "
              f"publish): median {statistics.median(ceiling):.0%} (range {ceiling[0]:.0%}-{ceiling[-1]:.0%})")
        print(f"single publishes, 8 threads:         {threaded_publish(url, args.concurrent, 8):>10,.0f} events/s")
        print(f"single publishes, 4 processes:       {process_publish(url, args.concurrent, 4):>10,.0f} events/s")
        for producers in (1, 2):
            rate = batched_publish(url, args.events, args.batch, producers)
            print(f"batched publish ({args.batch}/txn, {producers} producer(s)): {rate:>10,.0f} events/s")
    if args.only in (None, "consume"):
        print(f"consume + ack (1 consumer process):  {consume_and_ack(url, args.events):>10,.0f} events/s")
    if args.only in (None, "latency"):
        p50, p99, mean, call50, call99 = latency(url, args.rate, args.seconds)
        print(f"publish→handler at {args.rate}/s: p50 {p50:.2f} ms   p99 {p99:.2f} ms   mean {mean:.2f} ms")
        print(f"  of which the durable publish call:  p50 {call50:.2f} ms   p99 {call99:.2f} ms")
    for f in [*folder.glob("bench.db*"), *folder.glob("sqlite-rows.db*"), *folder.glob("store-rows.db*")]:
        if f.is_dir():
            for g in f.iterdir():
                g.unlink()
            f.rmdir()
        else:
            f.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
