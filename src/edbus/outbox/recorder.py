"""What every outbox recorder shares: encode at call time, then route each event by its production mode."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from edbus.backends.base import Record
from edbus.bus.bus import Bus
from edbus.errors import ValidationError
from edbus.events.types import EventType
from edbus.outbox.modes import ProducerMode, ProducerModes
from edbus.outbox.tables import row_from_record

__all__ = ["Item", "Recorder"]

log = logging.getLogger("edbus.outbox")

Item = tuple[EventType[Any], Any] | tuple[EventType[Any], Any, str]


class Recorder:
    """Encodes with the bus's codec when ``publish`` is called, so a bad payload raises ``ValidationError``
    before the transaction commits; then sends, defers or writes each event according to its mode."""

    def __init__(self, bus: Bus, modes: ProducerModes | None = None) -> None:
        self.bus = bus
        self.modes = modes or ProducerModes()

    def _encode(self, topic: str, items: Sequence[Item]) -> tuple[list[str], dict[ProducerMode, list[Record]]]:
        """The ids in the caller's order, and the records grouped by mode (each group keeps that order)."""
        full = self.bus.topic(topic)
        ids: list[str] = []
        routed: dict[ProducerMode, list[Record]] = {}
        for item in items:
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                raise ValidationError(f"expected (event_type, payload[, id]), got {item!r:.80}")
            record = self.bus.codec.encode(full, item[0], item[1], id=item[2] if len(item) == 3 else None)
            routed.setdefault(self.modes.mode_for(record.type), []).append(record)
            ids.append(record.id)
        return ids, routed

    def _rows(self, topic: str, records: Sequence[Record]) -> list[dict[str, Any]]:
        """Outbox rows carry the full topic name (with the bus's prefix): the relay needs no prefix."""
        now = time.time()
        full = self.bus.topic(topic)
        return [row_from_record(full, r, now) for r in records]

    def _send_after_commit(self, topic: str, records: Sequence[Record]) -> None:
        """An on_commit send: the transaction has committed, so a failure here can only be logged."""
        try:
            self.bus.publish_encoded(topic, records)
        except Exception:
            log.exception("edbus outbox: on_commit send of %d event(s) to %s failed after the commit; "
                          "lost: %s", len(records), topic, ", ".join(f"{r.type} {r.id}" for r in records))
