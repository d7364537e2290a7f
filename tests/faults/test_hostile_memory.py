"""Memory stays bounded under hostile input: a consumer process handling 2,000 hostile events (random,
truncated and 1 MB bytes, wrong headers, unknown types and versions) among 500 valid ones dead-letters
every hostile one, delivers every valid one in per-key order, and its peak RSS (VmHWM) does not grow
after the first 300 events.

Run alone, with the figures: ``pytest tests/faults/test_hostile_memory.py -s``."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edbus import Backoff, Bus, Event
from edbus.backends import Record
from tests.conftest import backend_url
from tests.events import SEQ, Seq
from tests.faults.test_hostile_consume import UNKNOWN, Templates, forged, prepare, zigzag

ROOT = Path(__file__).resolve().parents[2]
HOSTILE, VALID, WARMUP = 2_000, 500, 300
MB = 1024 * 1024


def vm_hwm_kib() -> int:
    """This process's peak resident set size, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def hostile_record(t: Templates, rng: random.Random, i: int) -> Record:
    """The i-th hostile record: each undecodable by construction, whatever the random bytes."""
    key, event_id = f"p{i % 50}", f"poison-{i}"
    if i % 200 == 10:  # a 1 MB payload whose first string claims more bytes than there are
        return forged(t.v1, key, event_id, payload=zigzag(2 * MB) + rng.randbytes(MB))
    kind = i % 8
    if kind == 0:
        size = rng.choice([0, 10, 1000, 16_000, 64_000])
        return forged(t.v1, key, event_id, payload=zigzag(size + 1000) + rng.randbytes(size))
    if kind == 1:
        return forged(t.v1, key, event_id, payload=t.v1.payload[:rng.randrange(len(t.v1.payload))])
    if kind == 2:
        return forged(t.v1, key, event_id, payload=t.v1.payload + rng.randbytes(rng.randint(1, 500)))
    if kind == 3:
        return forged(t.v1, key, event_id, ce_time=None, ce_id=rng.choice([None, event_id]))
    if kind == 4:
        return forged(t.v1, key, event_id, type=UNKNOWN, ce_type=UNKNOWN)
    if kind == 5:
        return forged(t.v1, key, event_id, ce_schemaversion=str(rng.randint(4, 10**9)))
    if kind == 6:
        return forged(t.other, key, event_id, ce_schemaversion=rng.choice(["x", "1.0", "nan"]))
    return forged(t.v2, key, event_id, ce_schemaversion="1")  # another version's bytes


def build(bus: Bus) -> None:
    """2,000 hostile records with a valid event after every fourth, on ten other keys."""
    t = prepare(bus)
    rng = random.Random(52)
    topic = bus.topic("t")
    records: list[Record] = []
    for i in range(HOSTILE):
        records.append(hostile_record(t, rng, i))
        if i % 4 == 3:
            n = i // 4
            records.append(bus.codec.encode(topic, SEQ, Seq(f"v{n % 10}", n)))
    assert len(records) == HOSTILE + VALID
    for start in range(0, len(records), 250):
        bus.backend.append(topic, records[start:start + 250])


def measure(url: str) -> dict[str, Any]:
    """In the consumer process: handle everything, with VmHWM after the warm-up and at the end.

    SQLite's page cache (64 MiB, ``PRAGMA cache_size`` in the store) fills as dead letters are written
    and would hide growth of edbus's own: it is set to 2 MiB here. (With 64 MiB, VmHWM levels off at
    about 126 MB after 5,000 such events and stays there to 10,000.)"""
    started = time.monotonic()
    bus = Bus.from_url(url)
    bus.backend.conn.db.execute("PRAGMA cache_size=-2048")  # type: ignore[attr-defined]
    consumer = bus.consumer("t", "s", max_attempts=3, backoff=Backoff(base=0.01), concurrency=4)
    last: dict[str | None, int] = {}
    stats = {"delivered": 0, "out_of_order": 0}

    @consumer.handler(SEQ)
    def handle(event: Event[Seq]) -> None:  # one key runs in one worker at a time: no lock needed per key
        if last.get(event.key, -1) >= event.data.n:
            stats["out_of_order"] += 1
        last[event.key] = event.data.n
        stats["delivered"] += 1

    consumer.run(max_events=WARMUP, install_signals=False)
    warm = vm_hwm_kib()
    consumer.run(max_events=HOSTILE + VALID - WARMUP, install_signals=False)  # the rest
    [sub] = bus.backend.subscriptions("t")
    return {**stats, "processed": consumer.processed, "dead_lettered": sub.dead_lettered, "backlog": sub.backlog,
            "hwm_warm_kib": warm, "hwm_end_kib": vm_hwm_kib(), "seconds": round(time.monotonic() - started, 1)}


def test_a_consumer_handling_2000_hostile_events_dead_letters_them_all_in_bounded_memory(tmp_path: Path) -> None:
    url = backend_url("sqlite", tmp_path)
    with Bus.from_url(url) as bus:
        build(bus)
    code = ("import json, sys; from tests.faults.test_hostile_memory import measure; "
            "print(json.dumps(measure(sys.argv[1])))")
    proc = subprocess.run([sys.executable, "-c", code, url], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.splitlines()[-1])
    print(f"\nhostile-input memory: {figures}")
    assert figures["processed"] == HOSTILE + VALID and figures["backlog"] == 0
    assert figures["dead_lettered"] == HOSTILE
    assert figures["delivered"] == VALID and figures["out_of_order"] == 0
    growth = figures["hwm_end_kib"] - figures["hwm_warm_kib"]
    assert growth < 16 * 1024, f"peak RSS grew by {growth} KiB after the warm-up"
