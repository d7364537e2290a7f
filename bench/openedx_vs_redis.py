"""edbus against the Redis event bus of Open edX, side by side, through openedx-events only:
`.venv/bin/python bench/openedx_vs_redis.py [--rounds 3] [--events 5000]`.

Each round measures, for each bus in turn (alternating which goes first), on a fresh store / a fresh
redis-server (`scripts/redis.sh`, installed the first time): one caller's `EventBusProducer.send`, the
consumer re-emitting the signal to one receiver, and publish→receiver latency at a paced rate (producer
and consumer in two processes). The buses: `edbus` (the embedded store, every send durable), `redis`
(edx-event-bus-redis on redis-server without persistence, as commonly deployed: not durable) and, with
`--durable-redis`, `redis-aof` (appendonly, appendfsync always). Each side is `bench/openedx_bus.py` in
its bus's own virtualenv. Each round also measures openedx-events' own work per event with no bus (the
`floor` mode): the rate no bus driven through openedx-events can exceed. Prints a table of medians and
the ratios; results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
REDIS_SH = ROOT / "scripts" / "redis.sh"
SIDE = BENCH / "openedx_bus.py"


def _json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise RuntimeError(f"no result in: {text[-2000:]}")


class Side:
    """One bus: its python, and a fresh store or server per measurement."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.python = sys.executable if name == "edbus" else subprocess.run(
            ["bash", str(REDIS_SH), "python"], check=True, capture_output=True, text=True).stdout.strip()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def fresh(self) -> str:
        """A URL to an empty store (edbus) or a just-started redis-server."""
        if self.name == "edbus":
            self.close()
            self._tmp = tempfile.TemporaryDirectory(dir=ROOT, prefix=".bench-")
            return f"sqlite:///{self._tmp.name}/edbus.db"
        mode = ["durable"] if self.name == "redis-aof" else []
        return subprocess.run(["bash", str(REDIS_SH), "start", *mode], check=True, capture_output=True,
                              text=True).stdout.strip().splitlines()[-1]

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        elif self.name != "edbus":
            subprocess.run(["bash", str(REDIS_SH), "stop"], check=True, capture_output=True)

    def run(self, mode: str, url: str, events: int, *extra: str) -> dict[str, Any]:
        bus = "edbus" if self.name == "edbus" else "redis"
        done = subprocess.run([self.python, str(SIDE), bus, mode, "--url", url, "--events", str(events), *extra],
                              capture_output=True, text=True, timeout=900, cwd=BENCH)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} {mode} exited {done.returncode}: {done.stderr[-3000:]}")
        return _json_line(done.stdout)

    def latency(self, url: str, events: int, rate: float) -> dict[str, Any]:
        """The consumer first (it says when it listens), then the paced producer in another process."""
        bus = "edbus" if self.name == "edbus" else "redis"
        listener = subprocess.Popen([self.python, str(SIDE), bus, "listen", "--url", url, "--events", str(events),
                                     "--group", "bench-latency"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, cwd=BENCH)
        try:
            assert listener.stdout is not None
            ready = listener.stdout.readline()
            if '"ready"' not in ready:
                raise RuntimeError(f"{self.name} listener did not start: {ready!r}")
            # "ready" comes once the consumer exists (Redis: its group is created); its loop starts right
            # after: one second for it to poll, the first tenth of the latencies is not counted anyway
            time.sleep(1.0)
            self.run("pace", url, events, "--rate", str(rate))
            out, err = listener.communicate(timeout=300)
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
        if listener.returncode != 0:
            raise RuntimeError(f"{self.name} listen exited {listener.returncode}: {err[-3000:]}")
        return _json_line(out)


def measure(side: Side, events: int, rate: float, latency_events: int) -> dict[str, float]:
    url = side.fresh()
    try:
        send = side.run("send", url, events)["events_per_s"]
        consume = side.run("consume", url, events)["events_per_s"]
    finally:
        side.close()
    url = side.fresh()
    try:
        lat = side.latency(url, latency_events, rate)
    finally:
        side.close()
    return {"send": send, "consume": consume, "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=5000, help="events per send/consume measurement")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s of the latency measurement")
    parser.add_argument("--latency-events", type=int, default=5000)
    parser.add_argument("--durable-redis", action="store_true", help="also Redis with appendfsync always")
    args = parser.parse_args()
    subprocess.run(["bash", str(REDIS_SH), "install"], check=True)
    sides = [Side("edbus"), Side("redis")] + ([Side("redis-aof")] if args.durable_redis else [])
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in sides}
    floors: list[dict[str, float]] = []
    for r in range(args.rounds):
        floors.append(sides[0].run("floor", "sqlite:///unused.db", 4 * args.events))
        print(f"round {r + 1} openedx-events alone: {json.dumps(floors[-1])}", flush=True)
        order = sides[r % len(sides):] + sides[:r % len(sides)]  # who goes first alternates
        for side in order:
            results[side.name].append(measure(side, args.events, args.rate, args.latency_events))
            print(f"round {r + 1} {side.name}: {json.dumps(results[side.name][-1])}", flush=True)
    keys = ("send", "consume", "p50_ms", "p99_ms")
    med = {name: {k: statistics.median(run[k] for run in runs) for k in keys} for name, runs in results.items()}
    print(f"\nmedians of {args.rounds} rounds ({args.events} events; latency at {args.rate:.0f}/s):")
    print(f"{'bus':10} {'send/s':>9} {'consume/s':>10} {'p50 ms':>7} {'p99 ms':>7}")
    for name, m in med.items():
        print(f"{name:10} {m['send']:9,.0f} {m['consume']:10,.0f} {m['p50_ms']:7.2f} {m['p99_ms']:7.2f}")
    for name in med:
        if name != "edbus":
            print(f"edbus / {name}: send {med['edbus']['send'] / med[name]['send']:.2f}x, "
                  f"consume {med['edbus']['consume'] / med[name]['consume']:.2f}x")
    sender = statistics.median(f["sender_per_s"] for f in floors)
    receiver = statistics.median(f["receiver_per_s"] for f in floors)
    print(f"openedx-events alone, no bus: sender side {sender:,.0f}/s, receiver side {receiver:,.0f}/s "
          f"({1e6 / receiver:.0f} us per re-emitted event)")
    for name in med:
        if name != "edbus":
            print(f"  consume at 10x {name} ({10 * med[name]['consume']:,.0f}/s) leaves a bus "
                  f"{1e6 / (10 * med[name]['consume']) - 1e6 / receiver:.0f} us per event of its own")
    print(json.dumps({"medians": med, "runs": results, "floors": floors, "pid": os.getpid()}))


if __name__ == "__main__":
    main()
