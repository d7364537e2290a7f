"""Producer and consumer processes for the multi-process tests: ``python -m tests.workers ...``.

Each writes what it did to its own log file outside the store (one line per event, flushed), so a test
can check what was acked and delivered even after a SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from edbus import Backoff, Bus, Event
from tests.events import SEQ, Seq


def produce(args: argparse.Namespace) -> None:
    bus = Bus.from_url(args.url)
    with open(args.log, "a", buffering=1) as log:
        for n in range(args.count):
            key = f"{args.name}-k{n % args.keys}"
            items = [(SEQ, Seq(key, n, args.name))]
            [event_id] = bus.publish_many(args.topic, items) if args.batch else [
                bus.publish(args.topic, SEQ, items[0][1])]
            log.write(json.dumps({"id": event_id, "key": key, "n": n}) + "\n")
    bus.close()


def consume(args: argparse.Namespace) -> None:
    bus = Bus.from_url(args.url, create=False)
    consumer = bus.consumer(args.topic, args.subscription, mode=args.mode, concurrency=args.concurrency,
                            lease=args.lease, batch=args.batch_size, max_attempts=args.max_attempts,
                            backoff=Backoff(base=0.01))
    log = open(args.log, "a", buffering=1)  # noqa: SIM115

    @consumer.handler(SEQ)
    def handle(event: Event[Seq]) -> None:
        start = time.monotonic_ns()
        if args.delay:
            time.sleep(args.delay)
        if event.data.n == args.die_on:
            os._exit(3)  # a poison event that kills the process
        if event.data.n == args.kill_on:
            os.kill(os.getpid(), signal.SIGKILL)  # a poison event that has the process SIGKILLed
        log.write(json.dumps({"id": event.id, "key": event.data.key, "n": event.data.n, "pid": os.getpid(),
                              "t": start, "attempt": event.attempt}) + "\n")

    print("ready", flush=True)
    consumer.run(idle_timeout=args.idle)
    log.close()
    bus.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["produce", "consume"])
    p.add_argument("--url", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--topic", default="seq")
    p.add_argument("--name", default="p0")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--keys", type=int, default=10)
    p.add_argument("--batch", action="store_true")
    p.add_argument("--subscription", default="s")
    p.add_argument("--mode", default="key_ordered")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-attempts", type=int, default=5)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--idle", type=float, default=None)
    p.add_argument("--die-on", type=int, default=-1)
    p.add_argument("--kill-on", type=int, default=-1)
    args = p.parse_args()
    (produce if args.role == "produce" else consume)(args)
    sys.exit(0)


if __name__ == "__main__":
    main()
