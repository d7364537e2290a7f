"""The outbox's tables in the service's own database (SQLAlchemy Core; the Django app declares the same).

- ``edbus_outbox``: one row per recorded event, the already-encoded edbus ``Record``. ``seq`` is the
  database's auto-increment: it orders rows but is not a cursor (a lower ``seq`` can commit, and so become
  visible, after a higher one). ``sent_at`` is NULL until the relay has published the row.
  ``bucket`` (0…1023) is a hash of the key: a relay shard takes the buckets ``bucket % shards == shard``, so
  one key is always relayed by one shard.
- ``edbus_outbox_lease``: one row per relay shard: who holds it and until when.
- ``edbus_consumed``: the event ids a subscription's handler has applied (the idempotent-consumer record).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from edbus.backends.base import Record

__all__ = ["BUCKETS", "bucket_of", "consumed", "create_tables", "lease", "metadata", "outbox", "record_from_row",
           "row_from_record"]

BUCKETS = 1024  # shards divide these: use a count that divides 1024 for even shards

metadata = sa.MetaData()

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_PAYLOAD = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

outbox = sa.Table(
    "edbus_outbox", metadata,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("type", sa.String(255), nullable=False),
    sa.Column("key", sa.Text(), nullable=True),
    sa.Column("bucket", sa.Integer(), nullable=False),
    sa.Column("headers", _TEXT, nullable=False),
    sa.Column("payload", _PAYLOAD, nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("sent_at", sa.Double(), nullable=True),
    sa.Index("edbus_outbox_pending", "sent_at", "seq"),
)

lease = sa.Table(
    "edbus_outbox_lease", metadata,
    sa.Column("shard", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=False),
)

consumed = sa.Table(
    "edbus_consumed", metadata,
    sa.Column("subscription", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("consumed_at", sa.Double(), nullable=False),
)


def create_tables(engine: sa.Engine) -> None:
    """Create the three tables if missing (or use the Django app's migration, or your own Alembic one)."""
    metadata.create_all(engine)


def bucket_of(key: str | None) -> int:
    """The key's hash bucket (events without a key have no order to keep: bucket 0)."""
    return 0 if key is None else zlib.crc32(key.encode()) % BUCKETS


def row_from_record(topic: str, record: Record, now: float) -> dict[str, Any]:
    return {"event_id": record.id, "topic": topic, "type": record.type, "key": record.key,
            "bucket": bucket_of(record.key),
            "headers": json.dumps(dict(record.headers), separators=(",", ":")), "payload": record.payload,
            "created_at": now, "sent_at": None}


def record_from_row(row: Mapping[Any, Any]) -> Record:
    return Record(row["event_id"], row["type"], row["key"], json.loads(row["headers"]), bytes(row["payload"]))
