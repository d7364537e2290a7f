"""A service's own table, changed in the same transactions as the outbox writes."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
business = sa.Table(
    "business", metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)


def bump(conn: sa.Connection, key: str) -> int:
    """Increment the key's counter under its row lock; the new value (1 for a new key)."""
    row = conn.execute(sa.select(business.c.n).where(business.c.key == key).with_for_update()).first()
    if row is None:
        conn.execute(sa.insert(business).values(key=key, n=1))
        return 1
    conn.execute(sa.update(business).where(business.c.key == key).values(n=row[0] + 1))
    return int(row[0]) + 1
