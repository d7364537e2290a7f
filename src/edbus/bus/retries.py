"""Retries with exponential backoff and jitter, then the dead-letter topic."""

from __future__ import annotations

import dataclasses
import random
import time

from edbus.backends.base import Delivery, ErrorInfo
from edbus.bus.middleware import DeadLetter, Middleware, Outcome, Retry
from edbus.errors import ConfigError, DecodeError, PermanentError

__all__ = ["Backoff", "Retries"]


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before attempt n+1: ``min(maximum, base * factor**(n-1))``, scaled by a random factor in
    [1 - jitter, 1] so that consumers failing together do not retry together."""

    base: float = 0.5
    factor: float = 2.0
    maximum: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.maximum < 0 or not 0 <= self.jitter <= 1:
            raise ConfigError(f"bad backoff {self}: need base >= 0, factor >= 1, maximum >= 0, 0 <= jitter <= 1")

    def delay(self, attempt: int) -> float:
        raw = min(self.maximum, self.base * self.factor ** max(0, attempt - 1))
        return raw * (1 - self.jitter * random.random())


class Retries(Middleware):
    """A failed delivery is retried after a backoff until ``max_attempts``, then dead-lettered.

    Undecodable events (``DecodeError``) and handler failures raised as ``PermanentError`` go to the
    dead-letter topic at once: retrying cannot help.
    """

    def __init__(self, max_attempts: int = 5, backoff: Backoff | None = None) -> None:
        if max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()

    def admit(self, delivery: Delivery) -> Outcome | None:
        """An event whose consumers died or hung holding it ``max(2, max_attempts)`` times (a poison
        event that crashes the process) is dead-lettered instead of crashing the next one. The runtime
        runs such events alone, so events that merely shared a batch with it are not counted."""
        if delivery.abandoned < max(2, self.max_attempts):
            return None
        return DeadLetter(ErrorInfo(
            "edbus.errors.AbandonedDelivery",
            f"delivered {delivery.abandoned} time(s) without an outcome: the consumer died or hung "
            "each time (its lease expired)", "", time.time(), delivery.attempt))

    def decide(self, delivery: Delivery, error: BaseException | None, info: ErrorInfo | None) -> Outcome | None:
        if info is None:
            return None
        if isinstance(error, (DecodeError, PermanentError)) or delivery.attempt >= self.max_attempts:
            return DeadLetter(info)
        return Retry(self.backoff.delay(delivery.attempt), info)
