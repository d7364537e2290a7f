"""Run the catalog service: ``python -m edbus_services.catalog.consume``::

    python -m edbus_services.catalog.consume --url "$EDBUS_URL" --db /var/lib/catalog/replica.db \\
        prod-course-catalog-info-changed catalog-replica

runs until SIGTERM/SIGINT (in-flight events finish and are acknowledged). Any number of such processes may
share the key_ordered subscription and the replica file. ``setup`` registers the replica on a consumer of
your own (``$EDBUS_CATALOG_DB``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edbus import Backoff, Bus, Consumer, Mode
from edbus.errors import ConfigError, EdbusError
from edbus_services.catalog.replica import CatalogReplica

__all__ = ["main", "setup"]


def setup(consumer: Consumer) -> CatalogReplica:
    """Register the replica at ``$EDBUS_CATALOG_DB`` as the handler of every event of ``consumer``'s topic."""
    path = os.environ.get("EDBUS_CATALOG_DB")
    if not path:
        raise ConfigError("EDBUS_CATALOG_DB is not set: the path of the catalog replica's SQLite file")
    replica = CatalogReplica(Path(path), consumer.name)
    replica.register(consumer)
    return replica


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edbus_services.catalog.consume",
                                     description="Keep a course catalog replica from a topic of openedx-events "
                                                 "catalog events (docs/catalog.md).")
    parser.add_argument("topic", help="the full topic name (with EVENT_BUS_TOPIC_PREFIX)")
    parser.add_argument("subscription", help="the catalog service's subscription, e.g. catalog-replica")
    parser.add_argument("--url", help="the store (default: $EDBUS_URL, else the embedded store's default)")
    parser.add_argument("--db", default=os.environ.get("EDBUS_CATALOG_DB"), help="the replica's SQLite file "
                        "(default: $EDBUS_CATALOG_DB)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="handler threads (default 16; their writes share commits)")
    parser.add_argument("--max-attempts", type=int, default=5, help="deliveries before a dead letter (default 5)")
    parser.add_argument("--idle-exit", type=float, help="exit after this many seconds without events")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if not args.db:
            raise ConfigError("--db (or $EDBUS_CATALOG_DB) is required: the replica's SQLite file")
        with Bus.from_url(args.url, source="openedx/catalog/replica") as bus:
            replica = CatalogReplica(Path(args.db))
            try:
                consumer = bus.consumer(args.topic, args.subscription, mode=Mode.KEY_ORDERED,
                                        concurrency=args.concurrency, max_attempts=args.max_attempts,
                                        backoff=Backoff())
                replica.register(consumer)
                processed = consumer.run(idle_timeout=args.idle_exit)
            finally:
                replica.close()
    except EdbusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("edbus.catalog").info("stopped after %d events (%d redeliveries had no effect)", processed,
                                            replica.duplicates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
