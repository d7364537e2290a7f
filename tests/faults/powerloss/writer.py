"""The processes of the power-loss and disk-full tests: ``python -m tests.faults.powerloss.writer ...``.

``publish`` publishes events one by one and in batches, with an occasional lull (the mix drawn from
``--seed``), until killed, ``--count`` is reached or, with ``--until-error``, a publish raises
``StoreError`` (logged as ``E error``). Before each publish it logs ``T first last`` (tried) and after
it returns ``A first last`` (acknowledged), with ``os.write`` to a log outside the store: the log is
what the outside world was told, which a power loss of the store's disk does not touch. ``consume``
logs ``H id`` for each event its handler gets, before the ack.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from edbus import Bus, Event
from edbus.backends.sqlite import SqliteBackend
from edbus.errors import StoreError
from tests.events import SEQ, Seq

TOPIC = "powerloss"


def event_id(n: int) -> str:
    return f"e{n:07d}"


def payload(n: int) -> Seq:
    """The payload of event ``n``: the checker recomputes it to spot a damaged event."""
    return Seq(f"k{n % 13}", n, "x" * (n * 37 % 700))


def publish(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = args.start
    try:
        bus = Bus(SqliteBackend.from_url(args.url))
        while n < args.start + args.count:
            if rng.random() < 1 / 400:  # a lull: the checkpointer catches up and the WAL starts over
                time.sleep(rng.uniform(0.25, 0.5))
            size = 1 if rng.random() < 0.6 else rng.randint(2, 16)
            batch = range(n, min(n + size, args.start + args.count))
            os.write(log, f"T {batch[0]} {batch[-1]}\n".encode())
            if len(batch) == 1:
                bus.publish(TOPIC, SEQ, payload(n), id=event_id(n))
            else:
                bus.publish_many(TOPIC, [(SEQ, payload(i), event_id(i)) for i in batch])
            os.write(log, f"A {batch[0]} {batch[-1]}\n".encode())
            n = batch[-1] + 1
    except StoreError as exc:
        if not args.until_error:
            raise
        os.write(log, f"E {type(exc).__name__}: {exc}\n".encode())
        return
    bus.close()


def consume(args: argparse.Namespace) -> None:
    bus = Bus(SqliteBackend.from_url(args.url, create=False))
    consumer = bus.consumer(TOPIC, "audit", mode="key_ordered", lease=args.lease, batch=32)
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @consumer.handler(SEQ)
    def handle(event: Event[Seq]) -> None:
        os.write(log, f"H {event.id}\n".encode())
        time.sleep(args.delay)

    consumer.run(idle_timeout=args.idle, install_signals=False)
    bus.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["publish", "consume"])
    p.add_argument("--url", required=True)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--until-error", action="store_true")
    p.add_argument("--lease", type=float, default=1.0)
    p.add_argument("--idle", type=float, default=None)
    p.add_argument("--delay", type=float, default=0.0)
    args = p.parse_args()
    (publish if args.role == "publish" else consume)(args)
    sys.exit(0)


if __name__ == "__main__":
    main()
