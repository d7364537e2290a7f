"""The Django recorder: ``publish`` inside ``transaction.atomic()`` writes the event with the business change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction

from edbus.bus.bus import Bus
from edbus.events.types import EventType
from edbus.outbox.modes import ProducerMode, ProducerModes
from edbus.outbox.recorder import Item, Recorder

__all__ = ["DjangoOutbox"]


class DjangoOutbox(Recorder):
    """``DjangoOutbox(bus).publish(topic, event_type, payload)`` in the service's ``atomic()`` block.

    Modes come from ``modes`` or, by default, the ``EVENT_BUS_PRODUCER_MODE`` setting (a mode name, or a
    mapping of event type names to modes with a ``"default"`` entry). ``outbox`` rows go through the
    ``using`` database connection, in its current transaction; ``on_commit`` sends from
    ``transaction.on_commit``; ``direct`` sends at once.
    """

    def __init__(self, bus: Bus, modes: ProducerModes | None = None) -> None:
        if modes is None:
            from django.conf import settings

            modes = ProducerModes.from_setting(getattr(settings, "EVENT_BUS_PRODUCER_MODE", None))
        super().__init__(bus, modes)

    def publish(self, topic: str, event_type: EventType[Any], payload: Any, *, id: str | None = None,
                using: str = "default") -> str:
        item: Item = (event_type, payload) if id is None else (event_type, payload, id)
        return self.publish_many(topic, [item], using=using)[0]

    def publish_many(self, topic: str, items: Sequence[Item], *, using: str = "default") -> list[str]:
        from edbus.contrib.django_outbox.models import OutboxEvent

        ids, routed = self._encode(topic, items)
        for mode, records in routed.items():
            if mode is ProducerMode.OUTBOX:
                OutboxEvent.objects.using(using).bulk_create(
                    [OutboxEvent(**row) for row in self._rows(topic, records)])
            elif mode is ProducerMode.ON_COMMIT:
                transaction.on_commit(lambda t=topic, r=records: self._send_after_commit(t, r), using=using)
            else:
                self.bus.publish_encoded(topic, records)
        return ids
