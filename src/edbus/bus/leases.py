"""What a consumer holds, and the thread that keeps holding it.

``InFlight`` is every delivery a consumer leased and has not yet settled in the store (running, waiting
to run, or finished with an outcome the store has not taken yet). ``LeaseKeeper`` renews those leases
from a thread of its own, every third of the lease: a slow store write, an outage the loop is backing
off from, or a retention sweep never delays a renewal behind the consumer loop's work.
"""

from __future__ import annotations

import logging
import threading
import time

from edbus.backends.base import Backend, Delivery
from edbus.errors import StoreError

__all__ = ["InFlight", "LeaseKeeper"]

log = logging.getLogger("edbus.consumer")


class InFlight:
    """Deliveries leased and not yet settled, by identity; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, Delivery] = {}

    def add(self, delivery: Delivery) -> None:
        with self._lock:
            self._held[id(delivery)] = delivery

    def discard(self, delivery: Delivery) -> None:
        with self._lock:
            self._held.pop(id(delivery), None)

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self._held.values())

    def __len__(self) -> int:
        return len(self._held)

    def __bool__(self) -> bool:
        return bool(self._held)


class LeaseKeeper:
    """Renews the leases of ``held`` every ``lease / 3`` seconds until ``stop()``.

    A renewal that fails (the store unreachable) is retried at the next tick; leases that expire
    meanwhile are delivered again (at least once), never lost. ``last_renewed`` (monotonic) tells how
    recently a renewal succeeded."""

    def __init__(self, backend: Backend, held: InFlight, lease: float, name: str = "edbus-leases") -> None:
        self.backend = backend
        self.held = held
        self.lease = lease
        self.every = lease / 3
        self.last_renewed = time.monotonic()
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._failures = 0

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.renew()

    def renew(self) -> None:
        deliveries = self.held.snapshot()
        if not deliveries:
            self.last_renewed = time.monotonic()
            return
        try:
            self.backend.extend(deliveries, self.lease)
        except StoreError as exc:
            self._failures += 1
            if self._failures in (1, 10) or self._failures % 100 == 0:  # an outage: say so, do not flood
                log.warning("renewing %d lease(s) failed (%d time(s) in a row): %s", len(deliveries),
                            self._failures, exc)
            return
        except Exception:  # a backend bug: logged with context, the thread goes on
            log.exception("renewing %d lease(s) crashed", len(deliveries))
            return
        if self._failures:
            log.info("lease renewal works again after %d failure(s)", self._failures)
        self._failures = 0
        self.renewals += 1
        self.last_renewed = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(5.0, self.every * 2))
