"""The consumer side: one Pulsar consumer per subscription and process, and the leases of the
process's logical consumers over what it received.

Pulsar spreads keys (Key_Shared), messages (Shared) or the whole topic (Failover) over processes; inside
a process the messages received are leased to the named consumers that call ``fetch``, with the same
rules as the embedded store: in ``key_ordered`` a message waits while an earlier one of its key is leased
or waiting for its retry, in ``exclusive`` everything waits behind the first. A retry (``nack`` with a
delay) is held here, unacked, until its time: later events of its key stay behind it, and Pulsar
redelivers it (with its redelivery count) if this process dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from edbus._rng import rng as _rng
from edbus.backends.base import Delivery, ErrorInfo, Message, Mode
from edbus.backends.pulsar.connection import pulsar_errors
from edbus.backends.pulsar.messages import to_message

__all__ = ["Held", "SubState", "consumer_type"]

_HISTORY_KEEP = 100


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    @functools.wraps(method)
    def run(self: SubState, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)
    return cast(_F, run)


def consumer_type(mode: Mode) -> Any:
    import pulsar

    return {Mode.KEY_ORDERED: pulsar.ConsumerType.KeyShared, Mode.SHARED: pulsar.ConsumerType.Shared,
            Mode.EXCLUSIVE: pulsar.ConsumerType.Failover}[mode]


@dataclasses.dataclass(slots=True)
class Held:
    """A received, unacked message of this process."""

    raw: Any
    message: Message
    redeliveries: int  # deliveries to processes that died holding it (the broker's count)
    leases: int = 0  # leases given here
    history: list[ErrorInfo] = dataclasses.field(default_factory=list)
    owner: str | None = None
    lease_expires: float = 0.0
    token: int = 0
    available_at: float = 0.0

    def free(self, now: float) -> bool:
        return self.lease_expires <= now and self.available_at <= now


class SubState:
    """One subscription in this process: its Pulsar consumer and what it holds."""

    def __init__(self, topic: str, subscription: str, mode: Mode, consumer: Any) -> None:
        self.topic = topic
        self.subscription = subscription
        self.mode = mode
        self.consumer = consumer
        self.held: dict[str, Held] = {}  # by position, in arrival order
        self.lock = threading.RLock()  # threads of the process may share a backend
        self.owner: str | None = None  # exclusive: the named consumer that holds the subscription
        self.owner_expires = 0.0
        self.first_wait = 0.0  # set by the backend: how long the next fetch waits for a first message

    # -- receiving ---------------------------------------------------------------------------
    def receive(self, timeout: float) -> bool:
        """Take one message from the client's queue into ``held``; False on timeout."""
        import pulsar

        try:
            msg = self.consumer.receive(timeout_millis=max(1, int(timeout * 1000)))
        except pulsar.Timeout:
            return False
        except BaseException:
            with pulsar_errors(f"receive on {self.topic}/{self.subscription}"):
                raise
            raise
        message = to_message(msg, self.topic)
        with self.lock:
            self.held[message.position] = Held(msg, message, msg.redelivery_count())
        return True

    def drain(self, consumer: str, want: int, first_wait: float, gap: float, most: float) -> None:
        """Receive until ``consumer`` could lease ``want``: waiting up to ``first_wait`` while it could
        lease none, then ``gap`` for each next message (what the broker dispatched together arrives
        together), for ``most`` seconds in all once one is leasable (a busy topic never makes a fetch
        wait for a whole batch)."""
        start = time.monotonic()
        leasable = len(self._choose(consumer, want, time.time()))
        while leasable < want:
            if leasable == 0:
                wait = first_wait - (time.monotonic() - start)
            else:
                wait = min(gap, most - (time.monotonic() - start))
            if wait <= 0 or not self.receive(wait):
                return
            leasable = len(self._choose(consumer, want, time.time()))

    # -- leasing -----------------------------------------------------------------------------
    @_locked
    def lease(self, consumer: str, limit: int, lease: float) -> list[Delivery]:
        now = time.time()
        chosen = self._choose(consumer, limit, now)
        if self.mode is Mode.EXCLUSIVE:
            if self.owner not in (None, consumer) and self.owner_expires > now:
                return []
            self.owner, self.owner_expires = consumer, now + lease
        token = _rng.getrandbits(62)
        out = []
        for h in chosen:
            h.owner, h.lease_expires, h.token = consumer, now + lease, token
            h.leases += 1
            out.append(Delivery(h.message, self.subscription, h.redeliveries + h.leases, tuple(h.history),
                                (self, h.message.position, token)))
        return out

    @_locked
    def _choose(self, consumer: str, limit: int, now: float) -> list[Held]:
        """What ``consumer`` may lease now, in order (the contract's per-key and total-order rules)."""
        if self.mode is Mode.EXCLUSIVE and self.owner not in (None, consumer) and self.owner_expires > now:
            return []
        chosen: list[Held] = []
        blocked: set[str | None] = set()
        for h in self.held.values():
            if len(chosen) >= limit:
                break
            if not h.free(now):
                if self.mode is Mode.EXCLUSIVE:
                    break
                blocked.add(h.message.record.key)
                continue
            if self.mode is Mode.KEY_ORDERED and h.message.record.key in blocked:
                continue
            chosen.append(h)
        return chosen

    @_locked
    def find(self, position: str, token: int) -> Held | None:
        h = self.held.get(position)
        return h if h is not None and h.token == token else None

    @_locked
    def ack(self, position: str, token: int) -> bool:
        h = self.find(position, token)
        if h is None:
            return False  # a stale lease: the message went to another consumer meanwhile
        with pulsar_errors(f"ack on {self.topic}/{self.subscription}"):
            self.consumer.acknowledge(h.raw)
        del self.held[position]
        return True

    @_locked
    def nack(self, position: str, token: int, delay: float, error: ErrorInfo | None) -> None:
        h = self.find(position, token)
        if h is None:
            return
        if error is not None:
            h.history.append(error)
            if len(h.history) > _HISTORY_KEEP:
                h.history = h.history[:1] + h.history[-(_HISTORY_KEEP - 1):]
        else:
            h.leases -= 1
        h.owner, h.lease_expires, h.token, h.available_at = None, 0.0, 0, time.time() + delay

    @_locked
    def extend(self, position: str, token: int, lease: float) -> None:
        h = self.find(position, token)
        if h is not None:
            h.lease_expires = time.time() + lease
            if self.mode is Mode.EXCLUSIVE and self.owner == h.owner:
                self.owner_expires = h.lease_expires

    @_locked
    def close(self) -> None:
        self.held.clear()
        with contextlib.suppress(BaseException):
            self.consumer.close()
