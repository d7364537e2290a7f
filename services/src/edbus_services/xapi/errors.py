"""The feed's errors, in edbus's tree. ``PermanentError`` subclasses are dead-lettered at once by the bus's
``Retries``; the others are retried with backoff."""

from __future__ import annotations

from edbus.errors import EdbusError, PermanentError

__all__ = ["LrsRejectedError", "LrsUnavailableError", "SinkError", "UntransformableEventError"]


class LrsRejectedError(PermanentError):
    """The LRS refused a statement with a 4xx that will never succeed (invalid statement). Dead-lettered at
    once; the message carries the HTTP status and the LRS's answer."""

    def __init__(self, statement_id: str, status: int, answer: str) -> None:
        super().__init__(f"the LRS refused statement {statement_id}: HTTP {status}: {answer}")
        self.statement_id, self.status, self.answer = statement_id, status, answer


class LrsUnavailableError(EdbusError):
    """The LRS could not be reached, timed out, or answered 5xx/408/429/401/403: retried with backoff."""


class SinkError(EdbusError):
    """The Caliper sink could not store an envelope: retried with backoff."""


class UntransformableEventError(PermanentError):
    """An event of a mapped type whose data lacks what the mapping needs: dead-lettered at once."""
