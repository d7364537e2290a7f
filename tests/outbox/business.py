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
    """Increment the key's counter (its row exists) under its row lock; the new value."""
    n = int(conn.execute(sa.select(business.c.n).where(business.c.key == key).with_for_update()).scalar_one())
    conn.execute(sa.update(business).where(business.c.key == key).values(n=n + 1))
    return n + 1
