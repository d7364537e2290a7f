"""Records and stored messages: what a producer hands a backend and what a backend hands back.

They sit below both ``edbus.events`` (the codec encodes to and decodes from them) and ``edbus.backends``
(which store and deliver them), so that neither depends on the other. ``edbus.backends`` re-exports them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = ["Message", "Record"]


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """An encoded event, as a producer hands it to a backend. ``headers`` carry the envelope.

    ``sequence``: the producer's own number for the event (``Bus.publish(..., sequence=)``), for
    deduplication across processes on backends that cannot look an event id up (Pulsar: a named producer
    and broker deduplication). It must grow with every new event of the producer, be kept with the event
    before its first publish, and be given again with the same id when the publish is retried."""

    id: str
    type: str
    key: str | None
    headers: Mapping[str, str]
    payload: bytes
    sequence: int | None = None

    @property
    def size(self) -> int:
        return len(self.payload) + sum(map(len, self.headers)) + sum(map(len, self.headers.values()))


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A stored record: where it is (``position``, opaque) and when it was appended (epoch seconds)."""

    record: Record
    topic: str
    position: str
    published_at: float
