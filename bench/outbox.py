"""Benchmark of the transactional outbox on PostgreSQL: `.venv/bin/python bench/outbox.py`.

Needs a PostgreSQL server: `bash scripts/databases.sh start` (the URL is read from its urls.env), or
`--db postgresql+psycopg://user@host:port/db`. Creates a throwaway database and a temporary embedded bus.

1. Outbox write overhead: the same business transaction (update one row of a 1,000-row table) committed
   `--transactions` times without and with one outbox event (`SQLAlchemyOutbox.publish`, ~1 KB record
   encoded with the bus's codec); the difference of the mean per transaction.
2. Relay throughput: `--events` pending rows published to the embedded bus (durable, batch of 1,000),
   marked sent, by one `Relay`; events per second.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from edbus import Bus
from edbus.outbox import Relay, SQLAlchemyOutbox, create_tables, outbox_status
from workload import EVENT, payload

meta = sa.MetaData()
accounts = sa.Table("accounts", meta, sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("balance", sa.Integer, nullable=False))


def default_db() -> str:
    url = os.environ.get("EDBUS_TEST_POSTGRES_URL")
    root = Path(__file__).resolve().parents[1]
    env = Path(os.environ.get("EDBUS_DB_DIR")
               or f"/tmp/edbus-databases-{hashlib.md5(str(root).encode()).hexdigest()[:12]}") / "urls.env"
    if not url and env.exists():
        url = dict(line.split("=", 1) for line in env.read_text().splitlines()).get("EDBUS_TEST_POSTGRES_URL")
    if not url:
        raise SystemExit("no PostgreSQL: run `bash scripts/databases.sh start` or pass --db")
    return url


def transactions(engine: sa.Engine, n: int, recorder: SQLAlchemyOutbox | None) -> list[float]:
    times = []
    for i in range(n):
        t = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.update(accounts).where(accounts.c.id == i % 1000).values(balance=accounts.c.balance + 1))
            if recorder is not None:
                recorder.publish(conn, "bench", EVENT, payload(i))
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=None)
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--events", type=int, default=50000)
    args = parser.parse_args()
    base = sa.make_url(args.db or default_db())
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine = sa.create_engine(base.set(database=name))
    try:
        with tempfile.TemporaryDirectory(prefix="edbus-bench-", dir=".") as tmp:
            run(engine, Bus.from_url(f"sqlite:///{Path(tmp).resolve()}/bus.db"), args)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def run(engine: sa.Engine, bus: Bus, args: argparse.Namespace) -> None:
    create_tables(engine)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(accounts), [{"id": i, "balance": 0} for i in range(1000)])
    recorder = SQLAlchemyOutbox(bus)
    transactions(engine, 300, recorder)  # warm up: connections, schema registration, caches
    transactions(engine, 300, None)
    plain, with_outbox = [], []
    for _ in range(3):  # interleaved rounds, so drift in the machine's load hits both alike
        plain += transactions(engine, args.transactions // 3, None)
        with_outbox += transactions(engine, args.transactions // 3, recorder)
    p, o = statistics.mean(plain) * 1000, statistics.mean(with_outbox) * 1000
    print(f"business transaction without outbox: mean {p:.3f} ms, median {statistics.median(plain) * 1000:.3f} ms")
    print(f"with one outbox event:               mean {o:.3f} ms, "
          f"median {statistics.median(with_outbox) * 1000:.3f} ms")
    print(f"outbox overhead per transaction:     {o - p:.3f} ms (mean), "
          f"{(statistics.median(with_outbox) - statistics.median(plain)) * 1000:.3f} ms (median)")

    Relay(engine, bus).run(until_idle=True)  # drain the warm-up and overhead rows
    batch = 1000
    with engine.begin() as conn:  # pending rows, written in transactions of 1,000
        for start in range(0, args.events, batch):
            recorder.publish_many(conn, "bench", [(EVENT, payload(i)) for i in range(start, start + batch)])
    assert outbox_status(engine).pending == args.events
    relay = Relay(engine, bus, batch=batch)
    t = time.perf_counter()
    relay.run(until_idle=True)
    elapsed = time.perf_counter() - t
    assert outbox_status(engine).pending == 0 and relay.sent == args.events
    print(f"relay: {args.events} events in {elapsed:.2f} s = {args.events / elapsed:,.0f} events/s "
          f"(batch {batch}, durable appends to the embedded bus, rows marked sent)")
    bus.close()


if __name__ == "__main__":
    main()
