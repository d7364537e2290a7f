"""Tracing middleware: W3C ``traceparent`` on every event, carried from a handler to what it publishes."""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from edbus._rng import rng as _rng
from edbus.backends.base import Delivery, ErrorInfo, Record
from edbus.bus.middleware import Middleware, Outcome

if TYPE_CHECKING:
    from edbus.events.types import Event

__all__ = ["Tracing", "current_traceparent"]

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("edbus_traceparent", default=None)
_VALID = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def _traceparents(count: int) -> list[str]:
    """Trace contexts for ``count`` events published now: the handled event's trace with new span ids
    inside a handler, otherwise a new trace each; the random digits drawn at once."""
    parent = _current.get()
    trace_id = parent.split("-")[1] if parent else ""
    width = 16 if trace_id else 48  # hex digits per event: a span id, after a trace id for a new trace
    ids = f"{_rng.getrandbits(4 * width * count):0{width * count}x}" if count else ""
    if trace_id:
        return [f"00-{trace_id}-{ids[j:j + 16]}-01" for j in range(0, width * count, width)]
    return [f"00-{ids[j:j + 32]}-{ids[j + 32:j + 48]}-01" for j in range(0, width * count, width)]


def current_traceparent() -> str | None:
    """The traceparent of the event being handled in this context, if any."""
    return _current.get()


class Tracing(Middleware):
    """Events published while a handler runs join the handled event's trace (new span id); others start
    a new trace. A malformed incoming traceparent is replaced, not propagated."""

    def publish_headers(self, topic: str, count: int) -> Mapping[str, Sequence[str]]:
        return {"traceparent": _traceparents(count)}

    def before_publish(self, topic: str, records: Sequence[Record]) -> Sequence[Record]:
        todo = [i for i, r in enumerate(records) if "traceparent" not in r.headers]
        if not todo:  # all of them encoded with one (publish_headers), or given one
            return records
        out = list(records)
        for i, trace in zip(todo, _traceparents(len(todo)), strict=True):
            r = records[i]
            headers = dict(r.headers)
            headers["traceparent"] = trace
            out[i] = Record(r.id, r.type, r.key, headers, r.payload, r.sequence)
        return out

    def before_process(self, delivery: Delivery, event: Event[object] | None) -> None:
        value = delivery.message.record.headers.get("traceparent")
        _current.set(value if value and _VALID.match(value) else None)

    def after_process(self, delivery: Delivery, error: BaseException | None, outcome: Outcome) -> None:
        _current.set(None)

    def decide(self, delivery: Delivery, error: BaseException | None, info: ErrorInfo | None) -> Outcome | None:
        return None
