"""Producer and consumer processes of the fault harness: ``python -m tests.faults.workers produce|consume``.

Both use only edbus's public API (``Bus.from_url``, ``publish``/``publish_many`` with caller-supplied
event ids, the consumer runtime) and record what they did in their own history log (``history.py``).

A producer started again on its log first retries, with the same event ids, every publish that a kill
left without an answer ("unknown"), then goes on with the next sequence numbers of its keys.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edbus import Bus, Event, Middleware, StartAt
from edbus.backends.base import Message, Record, dlq_topic
from edbus.bus import Tracing
from edbus.errors import NotFoundError, StoreError
from tests.events import SEQ, Seq
from tests.faults.history import HistoryWriter, event_id, now, read_history

__all__ = ["AckDelay", "ProducerLog", "main"]


class AckDelay(Middleware):
    """Holds a publish for ``delay`` seconds after the store acknowledged it and before ``publish``
    returns: widens the stored-but-not-answered window in which a SIGKILL leaves an unknown publish."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def after_publish(self, topic: str, records: Sequence[Record], error: BaseException | None) -> None:
        if error is None and self.delay > 0:
            time.sleep(self.delay)


class ProducerLog:
    """What a producer's earlier runs did, read back from its log: unknown publishes (attempted, never
    acknowledged, in attempt order) and the next sequence number of each key."""

    def __init__(self, path: Path) -> None:
        attempts: dict[str, dict[str, Any]] = {}
        acked: set[str] = set()
        self.next_seq: dict[str, int] = {}
        if path.exists():
            for r in read_history(path.parent, path.name):
                if r["k"] == "attempt":
                    attempts.setdefault(r["id"], r)
                    self.next_seq[r["key"]] = max(self.next_seq.get(r["key"], 0), r["seq"] + 1)
                elif r["k"] == "ack":
                    acked.update(r["ids"])
        self.unknown = [r for i, r in attempts.items() if i not in acked]


class _Stop:
    """SIGTERM/SIGINT as a flag, from the process's start (the runner sends SIGTERM only after the
    worker's ``start`` record, which is written after this is installed)."""

    def __init__(self) -> None:
        self.requested = False
        self.event = threading.Event()  # never waited on by the main thread: safe to set from a handler
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum: int, frame: object) -> None:
        self.requested = True
        self.event.set()


def _publish(bus: Bus, topic: str, history: HistoryWriter, batch: list[dict[str, Any]],
             retry: bool = False) -> None:
    """Log the attempt, publish, log the ack. A StoreError is an unknown outcome: the same ids are
    published again (after a pause) until acknowledged, even when a stop was requested."""
    items = [(SEQ, Seq(r["key"], r["seq"], r["producer"]), r["id"], r["n"]) for r in batch]
    while True:
        history.write_many("attempt", [{**r, "retry": retry} for r in batch])
        try:
            if len(items) == 1:
                bus.publish(topic, items[0][0], items[0][1], id=items[0][2], sequence=items[0][3])
            else:
                bus.publish_many(topic, items)
        except StoreError as exc:
            history.write("error", ids=[r["id"] for r in batch], error=f"{type(exc).__name__}: {exc}"[:300])
            retry = True
            time.sleep(0.2)  # the store is unavailable: back off before the retry
            continue
        history.write("ack", ids=[r["id"] for r in batch])
        return


def produce(args: argparse.Namespace) -> None:
    stop = _Stop()
    log_path = Path(args.log)
    earlier = ProducerLog(log_path)
    history = HistoryWriter(log_path)
    # on Pulsar a named producer (one per slot): the process started in place of a killed one takes its
    # name, and its retries carry their first sequence (``n``), so the broker drops what was stored
    url = args.url + ("&" if "?" in args.url else "?") + f"producer={args.name}" if args.url.startswith(
        "pulsar:") else args.url
    bus = Bus.from_url(url, middleware=[Tracing(), AckDelay(args.ack_delay)])
    history.write("start", unknown=len(earlier.unknown))
    for r in earlier.unknown:  # one by one, in their original order: each stored once, keys in order
        _publish(bus, args.topic, history, [{k: r[k] for k in ("id", "key", "seq", "producer", "n")}], True)
    keys = [f"{args.name}-k{i}" for i in range(args.keys)]
    next_seq = {k: earlier.next_seq.get(k, 0) for k in keys}
    started, sent, turn = now(), 0, sum(next_seq.values())
    while not stop.requested and (args.count is None or sent < args.count):
        size = args.batch if args.count is None else min(args.batch, args.count - sent)
        batch = []
        for _ in range(size):
            key = keys[turn % len(keys)]
            turn += 1
            seq = next_seq[key]
            next_seq[key] = seq + 1
            batch.append({"id": event_id(args.name, key, seq), "key": key, "seq": seq, "producer": args.name,
                          "n": turn - 1})  # n: the producer's sequence, growing with every new event
        _publish(bus, args.topic, history, batch)
        sent += size
        if args.rate:
            pause = started + sent / args.rate - now()
            if pause > 0:
                time.sleep(pause)  # pacing to the scenario's rate
    history.write("stop", sent=sent)
    history.close()
    bus.close()


def consume(args: argparse.Namespace) -> None:
    stop = _Stop()
    history = HistoryWriter(Path(args.log))
    bus = Bus.from_url(args.url, create=False)
    consumer = bus.consumer(args.topic, args.subscription, mode=args.mode, concurrency=args.concurrency,
                            lease=args.lease, batch=args.batch, max_attempts=args.max_attempts,
                            name=f"{args.name}-{os.getpid()}")
    slow_until = 0.0

    @consumer.handler(SEQ)
    def handle(event: Event[Seq]) -> None:
        nonlocal slow_until
        history.write("delivery", id=event.id, key=event.key, seq=event.data.n, producer=event.data.producer,
                      consumer=args.name, attempt=event.attempt)
        if args.delay:
            time.sleep(args.delay)  # the handler's work
        if args.slow_for:
            if not slow_until:
                slow_until = now() + args.slow_for
            if now() < slow_until:
                time.sleep(args.slow_delay)  # the slow phase of a slow consumer

    def stop_on_signal() -> None:
        stop.event.wait()
        consumer.stop()  # finishes and acks what is in flight

    threading.Thread(target=stop_on_signal, daemon=True).start()
    history.write("start")
    consumer.run(install_signals=False)
    history.write("stop", processed=consumer.processed)
    history.close()
    bus.close()


def tally(args: argparse.Namespace) -> None:
    """Writes ``{"stored": {id: copies}, "dead": [ids]}``: what the topic and its dead-letter topic hold
    (in a process of its own, so that a crash of the client library cannot take the runner down)."""
    bus = Bus.from_url(args.url, create=False)
    stored: dict[str, int] = {}
    for m in _read_all(bus, args.topic):
        stored[m.record.id] = stored.get(m.record.id, 0) + 1
    dead = [m.record.id for m in _read_all(bus, dlq_topic(args.topic, args.subscription))]
    Path(args.log).write_text(json.dumps({"stored": stored, "dead": dead}))
    bus.close()


def _read_all(bus: Bus, topic: str) -> Iterator[Message]:
    after: str | None = None
    while True:
        try:
            batch = bus.backend.read(topic, StartAt.parse("earliest"), 50_000, after)  # few readers: see _tally
        except NotFoundError:
            return
        if not batch:
            return
        yield from batch
        after = batch[-1].position


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.faults.workers")
    p.add_argument("role", choices=["produce", "consume", "tally"])
    p.add_argument("--url", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--topic", default="faults")
    p.add_argument("--name", default="p0")
    # producer
    p.add_argument("--count", type=int, default=None, help="events to publish (default: until SIGTERM)")
    p.add_argument("--keys", type=int, default=8)
    p.add_argument("--batch", type=int, default=1, help="producer: events per publish; consumer: fetch size")
    p.add_argument("--rate", type=float, default=0.0, help="events/s (0: as fast as possible)")
    p.add_argument("--ack-delay", type=float, default=0.0)
    # consumer
    p.add_argument("--subscription", default="harness")
    p.add_argument("--mode", default="key_ordered")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--lease", type=float, default=3.0)
    p.add_argument("--max-attempts", type=int, default=None)
    p.add_argument("--delay", type=float, default=0.0, help="seconds each handler takes")
    p.add_argument("--slow-for", type=float, default=0.0, help="seconds of slow handling after the first event")
    p.add_argument("--slow-delay", type=float, default=0.01)
    args = p.parse_args(argv)
    {"produce": produce, "consume": consume, "tally": tally}[args.role](args)
    sys.exit(0)


if __name__ == "__main__":
    main()
