"""Replay by time on Pulsar: ``Backend.seek`` and ``Backend.read`` from a time on a topic that holds N
events, the time being just before the last 10.
`.venv/bin/python bench/pulsar_seek.py --url "pulsar://127.0.0.1:6650?admin=http://127.0.0.1:8080" -n 100000`
(results in docs/benchmarks.md by hand)."""

from __future__ import annotations

import argparse
import time
import uuid

from edbus import Bus
from edbus.backends import Mode, StartAt
from workload import EVENT, payload  # bench/workload.py: the scripts run as python bench/<name>.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="pulsar://127.0.0.1:6650")
    parser.add_argument("-n", type=int, default=100_000, help="events in the topic before the cut")
    args = parser.parse_args()
    sep = "&" if "?" in args.url else "?"
    bus = Bus.from_url(f"{args.url}{sep}prefix=seek{uuid.uuid4().hex[:8]}-")
    topic = bus.topic("replay")
    bus.backend.subscribe(topic, "sub", Mode.SHARED, StartAt())
    for base in range(0, args.n, 1000):
        bus.publish_many("replay", [(EVENT, payload(i)) for i in range(base, min(args.n, base + 1000))])
    cut = time.time()
    while time.time() < cut + 0.01:
        time.sleep(0.005)  # the last 10 are published strictly after the cut
    bus.publish_many("replay", [(EVENT, payload(i)) for i in range(10)])
    start = time.perf_counter()
    bus.backend.seek(topic, "sub", StartAt("time", time=cut))
    seek = time.perf_counter() - start
    start = time.perf_counter()
    found = bus.backend.read(topic, StartAt("time", time=cut), 100)
    read = time.perf_counter() - start
    assert len(found) == 10, f"read {len(found)} events after the cut, not 10"
    print(f"{args.n:,} events: seek by time {seek:.2f} s, read from a time {read:.2f} s")
    bus.close()


if __name__ == "__main__":
    main()
