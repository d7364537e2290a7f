"""Tracing middleware: W3C ``traceparent`` on every event, carried from a handler to what it publishes."""

from __future__ import annotations

import contextvars
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edbus._rng import rng as _rng
from edbus.backends.base import Delivery, ErrorInfo, Record
from edbus.bus.middleware import Middleware, Outcome

if TYPE_CHECKING:
    from edbus.events.types import Event

__all__ = ["Tracing", "current_traceparent", "new_traceparent"]

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("edbus_traceparent", default=None)
_VALID = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def new_traceparent(trace_id: str | None = None) -> str:
    if trace_id:
        return f"00-{trace_id}-{_rng.getrandbits(64):016x}-01"
    ids = f"{_rng.getrandbits(192):048x}"  # trace id and span id from one draw
    return f"00-{ids[:32]}-{ids[32:]}-01"


def current_traceparent() -> str | None:
    """The traceparent of the event being handled in this context, if any."""
    return _current.get()


class Tracing(Middleware):
    """Events published while a handler runs join the handled event's trace (new span id); others start
    a new trace. A malformed incoming traceparent is replaced, not propagated."""

    def before_publish(self, topic: str, records: Sequence[Record]) -> Sequence[Record]:
        parent = _current.get()
        trace_id = parent.split("-")[1] if parent else ""  # joined; otherwise each record starts a trace
        # hex digits for each record, drawn at once: a span id, after a trace id for a new trace
        width = 16 if parent else 48
        ids = f"{_rng.getrandbits(4 * width * len(records)):0{width * len(records)}x}" if records else ""
        out = []
        for i, r in enumerate(records):
            if "traceparent" in r.headers:
                out.append(r)
                continue
            j = i * width
            headers = dict(r.headers)
            headers["traceparent"] = (f"00-{trace_id}-{ids[j:j + 16]}-01" if trace_id
                                      else f"00-{ids[j:j + 32]}-{ids[j + 32:j + 48]}-01")
            out.append(Record(r.id, r.type, r.key, headers, r.payload, r.sequence))
        return out

    def before_process(self, delivery: Delivery, event: Event[object] | None) -> None:
        value = delivery.message.record.headers.get("traceparent")
        _current.set(value if value and _VALID.match(value) else None)

    def after_process(self, delivery: Delivery, error: BaseException | None, outcome: Outcome) -> None:
        _current.set(None)

    def decide(self, delivery: Delivery, error: BaseException | None, info: ErrorInfo | None) -> Outcome | None:
        return None
