"""What the embedded store's schema costs per durable publish, SQL alone (`.venv/bin/python bench/store_schema.py`).

One event per ``BEGIN IMMEDIATE``/``COMMIT`` (WAL, synchronous=FULL, SQLite's default checkpointing), the
records encoded beforehand by edbus's codec, no other Python of edbus's: on SQLite's one-row table of the
same size, on edbus's schema (``connection.DDL``: the events table, its dedupe index (topic, id) and its
order index (topic, seq)), and on that schema without one index or both. Rounds alternate (the disk's pace
drifts on a shared machine). Then the WAL frames (pages) each variant writes per commit, counted on a
fresh file with checkpointing off. It says how far a schema change could take a single publish toward
SQLite's own rate (issue 13, target 1); results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edbus import Bus
from edbus.backends.base import Record
from edbus.backends.sqlite.connection import DDL
from edbus.backends.sqlite.store import _INSERT_EVENT
from workload import EVENT, payload

TOPIC = "bench"
WAL_FRAME = 4096 + 24  # page size + frame header


def variants() -> dict[str, Callable[[sqlite3.Connection], None]]:
    def bare(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB NOT NULL)")

    def schema(db: sqlite3.Connection) -> None:
        db.executescript(DDL)

    def without(*indexes: str) -> Callable[[sqlite3.Connection], None]:
        def make(db: sqlite3.Connection) -> None:
            db.executescript(DDL)
            for index in indexes:
                db.execute(f"DROP INDEX {index}")
        return make

    return {"SQLite, one row": bare, "edbus schema": schema,
            "without the order index": without("events_topic_seq"),
            "without the dedupe index": without("events_topic_id"),
            "table alone, no index": without("events_topic_seq", "events_topic_id")}


class Writer:
    """Commits of one variant's table, one event per transaction, as the store commits them."""

    def __init__(self, path: Path, make: Callable[[sqlite3.Connection], None], records: list[Record],
                 size: int, checkpoint: bool = True) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        if not checkpoint:
            self.db.execute("PRAGMA wal_autocheckpoint=0")
        make(self.db)
        self.bare = make.__name__ == "bare"
        self.records, self.next, self.row = records, 0, (os.urandom(size),)

    def rate(self, n: int) -> float:
        db = self.db
        start = time.perf_counter()
        for _ in range(n):
            db.execute("BEGIN IMMEDIATE")
            if self.bare:
                db.execute("INSERT INTO t(data) VALUES (?)", self.row)
            else:
                r = self.records[self.next]
                self.next += 1
                headers = json.dumps(r.headers, separators=(",", ":"))
                db.execute(_INSERT_EVENT, (TOPIC, r.id, r.type, r.key, headers, r.payload,
                                           len(headers) + len(r.payload), time.time()))
            db.execute("COMMIT")
        return n / (time.perf_counter() - start)


class EdbusSchemaRows(Writer):
    """What the store's SQL alone costs per durable publish, on its own schema (for bench/embedded.py):
    the ceiling of any single publish; the gap to it is edbus's Python per call."""

    def __init__(self, path: Path, records: list[Record]) -> None:
        super().__init__(path, variants()["edbus schema"], records, records[0].size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000, help="commits per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", help="folder for the files (default: a temporary one in the current folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=".bench-schema-", dir=args.dir or ".") as tmp:
        folder = Path(tmp)
        with Bus.from_url(f"sqlite:///{folder / 'codec.db'}") as bus:
            total = max(200 + args.events * args.rounds, 1020)  # 1,020: the frame count's commits
            records = [bus.codec.encode(TOPIC, EVENT, payload(i)) for i in range(total)]
        size = records[0].size
        makes = variants()
        writers = {name: Writer(folder / f"{i}.db", make, records, size)
                   for i, (name, make) in enumerate(makes.items())}
        rates: dict[str, list[float]] = {name: [] for name in writers}
        for w in writers.values():
            w.rate(200)  # warm up: tables, WAL files
        for _ in range(args.rounds):
            for name, w in writers.items():
                rates[name].append(w.rate(args.events))
        frames = {}
        for i, (name, make) in enumerate(makes.items()):
            w = Writer(folder / f"frames-{i}.db", make, records, size, checkpoint=False)
            w.rate(20)
            before = os.path.getsize(f"{w.path}-wal")
            w.rate(1000)
            frames[name] = (os.path.getsize(f"{w.path}-wal") - before) / WAL_FRAME / 1000
            w.db.close()
        for w in writers.values():
            w.db.close()
    print(f"event size {size} bytes; {args.rounds} rounds of {args.events:,} commits per variant, alternating")
    bare = rates["SQLite, one row"]
    for name, r in rates.items():
        ratios = sorted(x / b for x, b in zip(r, bare, strict=True))
        print(f"{name:26} median {statistics.median(r):>7,.0f}/s   "
              f"of SQLite's: median {statistics.median(ratios):4.0%} "
              f"(range {ratios[0]:.0%}-{ratios[-1]:.0%})   WAL frames per commit {frames[name]:.2f}")


if __name__ == "__main__":
    main()
