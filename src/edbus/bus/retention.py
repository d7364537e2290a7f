"""The retention sweep, off the consumer loop: a thread of its own, now and then.

The embedded store deletes in small batches, each its own short transaction, so a sweep over millions
of events never holds the store's write lock for long: lease renewals, acks and fetches of every
consumer go on between batches. Only a ``RetentionCapable`` backend gets a sweeper: on Pulsar retention is the
broker's namespace policy, and ``RetentionSweeper.for_backend`` says so once in the log.
"""

from __future__ import annotations

import logging
import threading
import time

from edbus.backends.base import Backend, RetentionCapable, broker_retention, retention_capable
from edbus.errors import StoreError

__all__ = ["RetentionSweeper"]

log = logging.getLogger("edbus.consumer")


class RetentionSweeper:
    """Calls ``backend.enforce_retention(now - retention)`` ``first`` seconds after ``start()``, then every
    ``every`` seconds, from a daemon thread. A failed sweep is logged and tried again at the next turn."""

    def __init__(self, backend: RetentionCapable, retention: float, *, first: float = 60.0, every: float = 600.0,
                 name: str = "edbus-retention") -> None:
        self.backend = backend
        self.retention = retention
        self.first, self.every = first, every
        self.sweeps = 0
        self.deleted = 0
        self.sweeping = threading.Event()  # set while a sweep runs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @classmethod
    def for_backend(cls, backend: Backend, retention: float | None, *, first: float = 60.0,
                    every: float = 600.0) -> RetentionSweeper | None:
        """A sweeper for ``backend``, or None: when ``retention`` is None (keep events forever) or when the
        backend leaves retention to its broker (logged once, so nobody waits for sweeps that never come)."""
        if retention is None:
            return None
        capable = retention_capable(backend)
        if capable is None:
            log.info("retention of %.0f s not swept by this consumer: %s", retention, broker_retention(backend))
            return None
        return cls(capable, retention, first=first, every=every)

    def start(self) -> RetentionSweeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        wait = self.first
        while not self._stop.wait(wait):
            wait = self.every
            self.sweep()

    def sweep(self) -> int:
        started = time.monotonic()
        self.sweeping.set()
        try:
            deleted = self.backend.enforce_retention(time.time() - self.retention)
        except StoreError as exc:
            if not self._stop.is_set():  # after stop() the store may be closed under the sweep
                log.warning("retention sweep failed (tried again in %.0f s): %s", self.every, exc)
            return 0
        except Exception:
            log.exception("retention sweep crashed (tried again in %.0f s)", self.every)
            return 0
        finally:
            self.sweeping.clear()
        self.sweeps += 1
        self.deleted += deleted
        log.info("retention: deleted %d acked event(s) older than %.0f s in %.1f s", deleted, self.retention,
                 time.monotonic() - started)
        return deleted

    def stop(self, timeout: float = 5.0) -> None:
        """No more sweeps; waits up to ``timeout`` for one in progress (each of its batches is its own
        transaction: one cut short by the process's exit deletes nothing half-way)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
