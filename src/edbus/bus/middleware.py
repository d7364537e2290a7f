"""Middleware: cross-cutting behaviour around publishing and processing, with before/after hooks.

The runtime asks the middleware, in order, what to do with a processed delivery (``decide``); the first
answer wins. A hook that raises is logged and skipped: a broken metrics exporter never loses an event.
``before_publish`` is the exception: it fails closed. A middleware that raises there (a policy that
refuses an event, or a bug in one) stops the publish, nothing is stored, and the caller gets the error:
an event a filter could not vet must not go out.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from edbus.backends.base import Delivery, ErrorInfo, Record
from edbus.errors import redact
from edbus.events.codec import ENVELOPE_HEADERS

if TYPE_CHECKING:
    from edbus.events.types import Event

__all__ = ["Ack", "DeadLetter", "Middleware", "MiddlewareChain", "Outcome", "Retry", "describe_records"]

log = logging.getLogger("edbus.middleware")


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    """Done: acknowledge."""


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """Redeliver after ``delay`` seconds."""

    delay: float
    error: ErrorInfo


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """Give up: move to the subscription's dead-letter topic."""

    error: ErrorInfo


Outcome = Ack | Retry | DeadLetter


def describe_records(records: Sequence[Record], limit: int = 10) -> str:
    """Events for a log line: their types and ids, never their payloads or keys (which may be personal)."""
    shown = ", ".join(f"{r.type} {r.id}" for r in records[:limit])
    more = f" and {len(records) - limit} more" if len(records) > limit else ""
    return f"{len(records)} event(s) ({shown}{more})"


class Middleware:
    """Override the hooks you need; each default does nothing."""

    def publish_headers(self, topic: str, count: int) -> Mapping[str, Sequence[str]]:
        """Envelope headers for the ``count`` events the bus is about to encode for ``topic``: header
        name → one value per event, written by the codec as it builds each record (cheaper than replacing
        every record in ``before_publish``). Records encoded elsewhere (``publish_encoded``) see only
        ``before_publish``."""
        return {}

    def before_publish(self, topic: str, records: Sequence[Record]) -> Sequence[Record]:
        """The records to store (the same, or replacements); raise to refuse them all: nothing is stored
        and the caller gets the exception."""
        return records

    def after_publish(self, topic: str, records: Sequence[Record], error: BaseException | None) -> None:
        pass

    def before_process(self, delivery: Delivery, event: Event[object] | None) -> None:
        pass

    def admit(self, delivery: Delivery) -> Outcome | None:
        """Before running the handler: an outcome here settles the delivery without running it."""
        return None

    def decide(self, delivery: Delivery, error: BaseException | None, info: ErrorInfo | None) -> Outcome | None:
        """What to do after processing; None lets the next middleware decide."""
        return None

    def after_process(self, delivery: Delivery, error: BaseException | None, outcome: Outcome) -> None:
        pass


class MiddlewareChain:
    def __init__(self, middleware: Sequence[Middleware]) -> None:
        self.middleware = list(middleware)

    def publish_headers(self, topic: str, count: int) -> dict[str, Sequence[str]]:
        out: dict[str, Sequence[str]] = {}
        for m in self.middleware:
            try:
                for name, values in m.publish_headers(topic, count).items():
                    if name in ENVELOPE_HEADERS:
                        raise ValueError(f"header {name!r} is the codec's own")
                    if len(values) != count:
                        raise ValueError(f"{len(values)} values of header {name!r} for {count} events")
                    out[name] = values
            except Exception:
                log.exception("middleware %s.publish_headers failed on topic %s", type(m).__name__, topic)
        return out

    def before_publish(self, topic: str, records: Sequence[Record]) -> Sequence[Record]:
        """Fails closed: the first middleware that raises stops the publish (logged with the events' ids
        and types, never their payloads) and its exception goes to the caller."""
        for m in self.middleware:
            try:
                records = m.before_publish(topic, records)
            except Exception as exc:
                log.error("middleware %s.before_publish refused %s on topic %s: %s: %s; nothing stored",
                          type(m).__name__, describe_records(records), topic, type(exc).__name__, redact(str(exc)))
                raise
        return records

    def after_publish(self, topic: str, records: Sequence[Record], error: BaseException | None) -> None:
        for m in self.middleware:
            try:
                m.after_publish(topic, records, error)
            except Exception:
                log.exception("middleware %s.after_publish failed on topic %s", type(m).__name__, topic)

    def before_process(self, delivery: Delivery, event: Event[object] | None) -> None:
        for m in self.middleware:
            try:
                m.before_process(delivery, event)
            except Exception:
                log.exception("middleware %s.before_process failed on event %s", type(m).__name__,
                              delivery.message.record.id)

    def admit(self, delivery: Delivery) -> Outcome | None:
        for m in self.middleware:
            try:
                outcome = m.admit(delivery)
            except Exception:
                log.exception("middleware %s.admit failed on event %s", type(m).__name__,
                              delivery.message.record.id)
                continue
            if outcome is not None:
                return outcome
        return None

    def decide(self, delivery: Delivery, error: BaseException | None, info: ErrorInfo | None) -> Outcome:
        for m in self.middleware:
            try:
                outcome = m.decide(delivery, error, info)
            except Exception:
                log.exception("middleware %s.decide failed on event %s", type(m).__name__,
                              delivery.message.record.id)
                continue
            if outcome is not None:
                return outcome
        if info is None:
            return Ack()
        return Retry(1.0, info)  # no policy installed: retry, never drop

    def after_process(self, delivery: Delivery, error: BaseException | None, outcome: Outcome) -> None:
        for m in self.middleware:
            try:
                m.after_process(delivery, error, outcome)
            except Exception:
                log.exception("middleware %s.after_process failed on event %s", type(m).__name__,
                              delivery.message.record.id)
