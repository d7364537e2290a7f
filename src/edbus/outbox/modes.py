"""Production modes (openedx-events ADR 0015), chosen per event type.

- ``direct``: publish to the bus at once, whatever the transaction does (a rollback still sent it).
- ``on_commit``: publish right after the transaction commits (nothing for a rollback; lost on a crash
  between commit and send, or if the bus is down then).
- ``outbox``: write the event into the service's database in the same transaction; a relay publishes it
  (nothing for a rollback, nothing lost after a commit; delivered after the relay's next poll).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from edbus.errors import ConfigError

__all__ = ["ProducerMode", "ProducerModes"]


class ProducerMode(enum.StrEnum):
    DIRECT = "direct"
    ON_COMMIT = "on_commit"
    OUTBOX = "outbox"

    @classmethod
    def parse(cls, value: str | ProducerMode) -> ProducerMode:
        try:
            return cls(str(value).replace("-", "_").lower())
        except ValueError:
            raise ConfigError(f"unknown producer mode {value!r}: direct, on_commit or outbox") from None


class ProducerModes:
    """A default mode and per-event-type overrides.

    ``ProducerModes.from_setting(EVENT_BUS_PRODUCER_MODE)`` takes a mode name, or a mapping of event type
    names to modes with an optional ``"default"`` entry (default of the default: ``outbox``).
    """

    def __init__(self, default: str | ProducerMode = ProducerMode.OUTBOX,
                 per_type: Mapping[str, str | ProducerMode] | None = None) -> None:
        self.default = ProducerMode.parse(default)
        self.per_type = {name: ProducerMode.parse(m) for name, m in (per_type or {}).items()}

    @classmethod
    def from_setting(cls, value: str | Mapping[str, str] | None) -> ProducerModes:
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(value)
        if not isinstance(value, Mapping):
            raise ConfigError("EVENT_BUS_PRODUCER_MODE: a mode name or a mapping of event types to modes")
        per_type = dict(value)
        return cls(per_type.pop("default", ProducerMode.OUTBOX), per_type)

    def mode_for(self, event_type: str) -> ProducerMode:
        return self.per_type.get(event_type, self.default)
