"""The backend's one retry schedule: exponential backoff up to a deadline.

A class of a few lines rather than tenacity or stamina: the callers (an append resending the rest of a
batch with a new producer, an admin call the broker answered "busy") keep state across attempts and
build their own final error (how many events were stored), which a decorator-style retry would hide;
what they need from a helper is only "sleep the next delay, unless the deadline would pass".
"""

from __future__ import annotations

import time

__all__ = ["Backoff"]


class Backoff:
    """Delays of ``first`` seconds doubling to ``most``, for ``timeout`` seconds from creation."""

    __slots__ = ("deadline", "delay", "most")

    def __init__(self, timeout: float, first: float = 0.05, most: float = 2.0) -> None:
        self.deadline = time.monotonic() + timeout
        self.delay = first
        self.most = most

    def sleep(self) -> bool:
        """Sleep the next delay and return True; False at once if that sleep would pass the deadline."""
        if time.monotonic() + self.delay > self.deadline:
            return False
        time.sleep(self.delay)  # backoff before the next attempt, not synchronisation
        self.delay = min(self.delay * 2, self.most)
        return True
