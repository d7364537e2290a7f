"""Processes for the multi-process outbox tests: a service writing business changes with outbox events."""

from __future__ import annotations

import argparse
import random

import sqlalchemy as sa

from edbus import Bus
from edbus.outbox import SQLAlchemyOutbox
from tests.events import SEQ, Seq
from tests.outbox.business import bump


def write(args: argparse.Namespace) -> None:
    """``transactions`` transactions, each bumping ``per_tx`` keys' counters and recording one event per
    bump with the new value: per key, the values 1, 2, 3… are the order the consumer must see."""
    engine = sa.create_engine(args.db)
    bus = Bus.from_url(args.bus)
    recorder = SQLAlchemyOutbox(bus)
    rnd = random.Random(args.name)
    for _ in range(args.transactions):
        keys = sorted(rnd.sample(range(args.keys), args.per_tx))  # one lock order: no deadlocks
        with engine.begin() as conn:
            for k in keys:
                n = bump(conn, f"k{k}")
                recorder.publish(conn, "seq", SEQ, Seq(f"k{k}", n, args.name))
    bus.close()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("--db", required=True)
    w.add_argument("--bus", required=True)
    w.add_argument("--name", required=True)
    w.add_argument("--keys", type=int, default=10)
    w.add_argument("--transactions", type=int, default=100)
    w.add_argument("--per-tx", type=int, default=3)
    args = parser.parse_args()
    write(args)


if __name__ == "__main__":
    main()
