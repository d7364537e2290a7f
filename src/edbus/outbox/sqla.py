"""The SQLAlchemy recorder: ``publish`` inside the caller's transaction (Core ``Connection`` or ORM ``Session``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from edbus.backends.base import Record
from edbus.errors import ConfigError
from edbus.events.types import EventType
from edbus.outbox.modes import ProducerMode
from edbus.outbox.recorder import Item, Recorder
from edbus.outbox.tables import outbox

__all__ = ["SQLAlchemyOutbox"]

_PENDING = "edbus_outbox_on_commit"


class SQLAlchemyOutbox(Recorder):
    """``outbox.publish(conn_or_session, topic, event_type, payload)`` in the business transaction.

    In ``outbox`` mode the row is inserted through ``conn_or_session``: it commits or rolls back with the
    business change. ``on_commit`` needs a ``Session`` (sent from its ``after_commit`` hook, dropped on
    rollback). ``direct`` publishes at once. Returns the event ids, which are also the bus's ids.
    """

    def publish(self, target: sa.Connection | Session, topic: str, event_type: EventType[Any], payload: Any, *,
                id: str | None = None) -> str:
        item: Item = (event_type, payload) if id is None else (event_type, payload, id)
        return self.publish_many(target, topic, [item])[0]

    def publish_many(self, target: sa.Connection | Session, topic: str, items: Sequence[Item]) -> list[str]:
        ids, routed = self._encode(topic, items)
        for mode, records in routed.items():
            if mode is ProducerMode.OUTBOX:
                target.execute(sa.insert(outbox), self._rows(topic, records))
            elif mode is ProducerMode.ON_COMMIT:
                self._defer(target, topic, records)
            else:
                self.bus.publish_encoded(topic, records)
        return ids

    def _defer(self, target: sa.Connection | Session, topic: str, records: list[Record]) -> None:
        if not isinstance(target, Session):
            raise ConfigError("on_commit mode needs an ORM Session (a Core Connection has no after-commit hook); "
                              "use outbox mode for Connections")
        target.connection()  # begin the session's transaction now, so its end (commit or not) is seen
        pending: list[tuple[str, list[Record]]] | None = target.info.get(_PENDING)
        if pending is None:
            pending = target.info[_PENDING] = []
            event.listen(target, "after_commit", self._on_commit)
            event.listen(target, "after_transaction_end", _on_end)
        pending.append((topic, records))

    def _on_commit(self, session: Session) -> None:
        for topic, records in session.info.pop(_PENDING, []):
            self._send_after_commit(topic, records)
        session.info[_PENDING] = []


def _on_end(session: Session, transaction: SessionTransaction) -> None:
    """The outermost transaction ended (after ``after_commit`` if it committed): drop what was not sent.
    A rolled-back savepoint keeps its events: use outbox mode where savepoints roll back."""
    if transaction.parent is None:
        session.info[_PENDING] = []

