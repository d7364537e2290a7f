"""Publish→handler latency of the embedded store when the consumer runs in another network namespace
(another container sharing the store's volume) or in the same one: `python bench/wakeup.py [--netns]`.
Low rate on purpose: the consumer is idle between events, so each event's latency is its wake-up's.
Needs root and util-linux's `unshare` for --netns. Results go to docs/operations.md with this command."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edbus import Bus, Event
from edbus.bus.metrics import percentile
from workload import EVENT, Enrollment, payload


def consume(url: str, n: int) -> None:
    with Bus.from_url(url) as bus:
        consumer = bus.consumer("wake", "lat", start="latest")
        samples: list[float] = []

        @consumer.handler(EVENT)
        def handle(event: Event[Enrollment]) -> None:
            samples.append(time.time() - event.envelope.time.timestamp())

        bus.backend.subscribe("wake", "lat", consumer.mode, consumer.start)
        print("ready", os.readlink("/proc/self/ns/net"), flush=True)
        consumer.run(max_events=n, install_signals=False)
        print(json.dumps(samples), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", action="store_true", help="consumer in its own network namespace")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--consume", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        consume(args.consume[0], int(args.consume[1]))
        return
    with tempfile.TemporaryDirectory(prefix="edbus-bench-") as folder:
        url = f"sqlite:///{Path(folder).resolve()}/edbus.db"
        prefix = ["unshare", "--net"] if args.netns else []
        child = subprocess.Popen([*prefix, sys.executable, __file__, "--consume", url, str(args.events)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        _, netns = child.stdout.readline().split()
        same = netns == os.readlink("/proc/self/ns/net")
        with Bus.from_url(url) as bus:
            start = time.perf_counter()
            for i in range(args.events):
                while (now := time.perf_counter()) < start + i / args.rate:
                    time.sleep(min(start + i / args.rate - now, 0.005))
                bus.publish("wake", EVENT, payload(i))
        samples = json.loads(child.stdout.readline())
        child.wait()
    ms = sorted(s * 1000 for s in samples[len(samples) // 20:])  # drop the warm-up
    print(f"consumer in {'the same' if same else 'another'} network namespace, {args.rate:g} events/s, "
          f"{len(ms)} events: p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
          f"mean {sum(ms) / len(ms):.2f} ms, max {ms[-1]:.2f} ms")


if __name__ == "__main__":
    main()
