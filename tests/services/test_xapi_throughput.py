"""What the xAPI feed delivers to a real Ralph (fs backend): statements per second draining a backlog at
batch 100, and publish→stored latency at a steady publish rate. The figures in docs/xapi.md come from

    EDBUS_XAPI_BENCH_EVENTS=10000 EDBUS_XAPI_BENCH_RATE=200 EDBUS_XAPI_BENCH_SECONDS=20 \\
        .venv/bin/pytest -q -s tests/services/test_xapi_throughput.py

The default sizes keep it short in CI; the bounds asserted are far below the figures measured (a shared
2-core box), so the test fails only when batching or acknowledgement is broken, not when the box is busy.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

from edbus import Bus
from edbus_services.xapi import FeedOptions, XapiConfig, XapiFeed
from tests.conftest import backend_url, eventually
from tests.services.conftest import T0, TOPICS, Ralph, publish_signals, signal_data

NAME = "COURSE_ENROLLMENT_CREATED"
TOPIC = TOPICS[NAME]
EVENTS = int(os.environ.get("EDBUS_XAPI_BENCH_EVENTS", "1000"))
RATE = float(os.environ.get("EDBUS_XAPI_BENCH_RATE", "100"))
SECONDS = float(os.environ.get("EDBUS_XAPI_BENCH_SECONDS", "4"))


def enrollments(first: int, count: int) -> list[tuple[dict[str, object], dt.datetime]]:
    return [(signal_data(NAME, n), T0 + dt.timedelta(seconds=n)) for n in range(first, first + count)]


def run_until_acked(feed: XapiFeed, count: int, timeout: float) -> float:
    """Run the feed in a thread until ``count`` events are acked; returns the seconds it took."""
    runner = threading.Thread(target=feed.run)
    started = time.monotonic()
    runner.start()
    try:
        eventually(lambda: feed.metrics.snapshot().get("acked", 0) >= count, timeout=timeout, interval=0.02)
        return time.monotonic() - started
    finally:
        feed.stop()
        runner.join(60)


def test_statements_per_second_and_publish_to_stored_latency(tmp_path: Path, own_ralph: Ralph, lms_url: str) -> None:
    xapi, options = XapiConfig(lms_url=lms_url), FeedOptions(topics=(TOPIC,), batch_size=100)

    # 1. a backlog, drained at batch 100
    backlog_url = backend_url("sqlite", tmp_path / "backlog")
    (tmp_path / "backlog").mkdir()
    with Bus.from_url(backlog_url) as bus:
        for first in range(1, EVENTS + 1, 1000):
            publish_signals(bus, NAME, enrollments(first, min(1000, EVENTS + 1 - first)))
    with XapiFeed(backlog_url, own_ralph.lrs, options=options, xapi=xapi) as feed:
        drain = run_until_acked(feed, EVENTS, timeout=300)
        batches = feed.report(EVENTS).batches
    throughput = EVENTS / drain

    # 2. a steady publisher at RATE events/s while the feed runs: publish→stored latency
    steady_url = backend_url("sqlite", tmp_path / "steady")
    (tmp_path / "steady").mkdir()
    total = int(RATE * SECONDS)
    with Bus.from_url(steady_url) as bus, XapiFeed(steady_url, own_ralph.lrs, options=options, xapi=xapi) as feed:
        def publish() -> None:
            start = time.monotonic()
            for i in range(total):
                time.sleep(max(0.0, start + i / RATE - time.monotonic()))
                publish_signals(bus, NAME, enrollments(EVENTS + 1 + i, 1))

        publisher = threading.Thread(target=publish)
        publisher.start()
        run_until_acked(feed, total, timeout=SECONDS + 120)
        publisher.join()
        snapshot = feed.metrics.snapshot()

    stored = own_ralph.stored_lines(lms_url)
    assert len(stored) == len({s["id"] for s in stored}) == EVENTS + total
    p50, p99 = snapshot["latency_p50"], snapshot["latency_p99"]
    print(f"\nxAPI feed → Ralph 5.1.0 (fs): backlog of {EVENTS}: {throughput:.0f} statements/s "
          f"({batches} batches, {drain:.2f} s); steady {RATE:.0f}/s for {SECONDS:.0f} s: "
          f"publish→stored p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    assert batches <= EVENTS / 20  # batched: 100 per POST when a backlog waits
    assert throughput > 50
    assert p99 < 5.0
