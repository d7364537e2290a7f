"""The idempotent consumer: apply an event's effects at most once per subscription.

Call ``first_delivery`` inside the transaction that makes the handler's own changes. It inserts
(subscription, event id) into ``edbus_consumed``; if that row exists, the event was applied before (a
redelivery after a crash, a relay's re-send of the same id) and the handler must skip its changes. The
row commits or rolls back with the changes, so a handler that fails leaves no record and runs again.
A concurrent delivery of the same id waits on the row's unique key, then sees it.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.orm import Session

from edbus.outbox.tables import consumed

__all__ = ["first_delivery", "purge_consumed"]


def first_delivery(target: sa.Connection | Session, subscription: str, event_id: str) -> bool:
    """True the first time ``event_id`` is seen by ``subscription`` in a committed transaction.

    Runs in a savepoint (but on SQLite), so a duplicate leaves the caller's transaction usable (PostgreSQL
    would abort it).
    """
    conn = target.connection() if isinstance(target, Session) else target
    insert = sa.insert(consumed).values(subscription=subscription, event_id=event_id, consumed_at=time.time())
    try:
        if conn.dialect.name == "sqlite":
            # a failed statement leaves SQLite's transaction as it was; and pysqlite would run a SAVEPOINT
            # outside the caller's transaction (it begins one only at the first DML statement)
            conn.execute(insert)
        else:
            with conn.begin_nested():
                conn.execute(insert)
    except sa.exc.IntegrityError:
        return False
    return True


def purge_consumed(engine: sa.Engine, older_than: float) -> int:
    """Delete tracking rows older than ``older_than`` seconds: keep them longer than redeliveries can come
    (the bus's retention)."""
    with engine.begin() as conn:
        cur = conn.execute(sa.delete(consumed).where(consumed.c.consumed_at < time.time() - older_than))
        return int(cur.rowcount or 0)
