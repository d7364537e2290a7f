"""The consumer side: one Pulsar consumer per subscription and process, and the leases of the
process's logical consumers over what it received.

Pulsar spreads keys (Key_Shared) or messages (Shared) over processes, or gives the whole topic to one
(Exclusive: the other processes are standbys whose subscribe the broker refuses until it is free); inside
a process the messages received are leased to the named consumers that call ``fetch``, with the same
rules as the embedded store: in ``key_ordered`` a message waits while an earlier one of its key is leased
or waiting for its retry, in ``exclusive`` everything waits behind the first. A retry (``nack`` with a
delay) is held here, unacked, until its time: later events of its key stay behind it, and Pulsar
redelivers it if this process dies.

Attempts are counted in the subscription's attempt ledger (attempts.py), not by the broker's redelivery
count (0 after a consumer's death): a lease batch is recorded there before ``lease`` returns it, and a
message new to this process is looked up there first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from edbus._rng import rng as _rng
from edbus.backends.base import Delivery, ErrorInfo, Message, Mode, add_failure
from edbus.backends.pulsar.attempts import AttemptLedger, Attempts
from edbus.backends.pulsar.connection import pulsar_errors
from edbus.backends.pulsar.messages import to_message
from edbus.errors import StoreError

__all__ = ["Held", "SubState", "consumer_type"]

_NOTHING = (-1, -1)
_WARN_EVERY = 10.0  # seconds between warnings of a ledger that cannot be written
_SETTLED_KEEP = 10_000  # acked positions remembered against redelivered copies (``SubState.settled``)

log = logging.getLogger("edbus.backends.pulsar")


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    @functools.wraps(method)
    def run(self: SubState, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)
    return cast(_F, run)


def consumer_type(mode: Mode) -> Any:
    import pulsar

    # exclusive is Pulsar's Exclusive, not Failover: Failover switches its active consumer when another
    # joins and redelivers what the previous one still runs (two processes handling the same events)
    return {Mode.KEY_ORDERED: pulsar.ConsumerType.KeyShared, Mode.SHARED: pulsar.ConsumerType.Shared,
            Mode.EXCLUSIVE: pulsar.ConsumerType.Exclusive}[mode]


@dataclasses.dataclass(slots=True)
class Held:
    """A received, unacked message of this process."""

    raw: Any
    message: Message
    at: tuple[int, int]  # (ledger, entry)
    retry: bool  # from the subscription's retry topic
    before: int = 0  # attempts started before this process took it (the attempt ledger's count)
    looked: bool = False  # looked up in the attempt ledger
    leases: int = 0  # leases given here
    history: list[ErrorInfo] = dataclasses.field(default_factory=list)
    owner: str | None = None
    lease_expires: float = 0.0
    token: int = 0
    available_at: float = 0.0
    first_receipt: bool = True  # its position was not held yet when it was received

    def free(self, now: float) -> bool:
        return self.lease_expires <= now and self.available_at <= now

    def state(self, leased: int = 0) -> Attempts | None:
        """For the attempt ledger: attempts started (``leased`` fewer: leases released) and the errors;
        ``None`` when there is nothing to remember."""
        started = self.before + self.leases - leased
        if started <= 0 and not self.history:
            return None
        return Attempts(started, tuple(self.history), self.at[0], self.at[1], self.retry)


@dataclasses.dataclass(slots=True)
class _Scan:
    count: int  # leasable now
    blocked: set[str | None]  # keys behind a message that is not free
    stopped: bool  # exclusive: nothing after the scan's end is leasable
    due: float  # when something not free becomes free (the count may grow then: scan again)
    version: int  # SubState.version when scanned


class SubState:
    """One subscription in this process: its Pulsar consumer and what it holds."""

    def __init__(self, topic: str, subscription: str, mode: Mode, consumer: Any, name: str = "") -> None:
        self.topic = topic
        self.subscription = subscription
        self.mode = mode
        self.consumer = consumer
        self.name = name  # the consumer's name, as the broker's stats list it
        # pulsar-client's C++ consumer, under its Python wrapper (3.5 to 3.13: ``_consumer``): receiving and acking
        # through it skips a wrapper object and a type check per message (~10 % of a fetch's time)
        self.native = getattr(consumer, "_consumer", consumer)
        self.held: dict[str, Held] = {}  # by position, in arrival order
        self.settled: dict[str, None] = {}  # positions acked lately, oldest first (at most _SETTLED_KEEP)
        self.lock = threading.RLock()  # threads of the process may share a backend
        # one receiving thread at a time: two threads' receive calls could return in one order and
        # reach ``held`` in the other, putting a later event of a key before an earlier one
        self.receiving = threading.Lock()
        self.owner: str | None = None  # exclusive: the named consumer that holds the subscription
        self.owner_expires = 0.0
        self.first_wait = 0.0  # set by the backend: how long the next fetch waits for a first message
        self.trusted_until = 0.0  # set by the backend: until when (monotonic) the subscription needs no check
        self.closed = False  # replaced by a new consumer (or unsubscribed): fetches and acks on it do nothing
        self.disconnected_since = 0.0  # set by the backend: when (monotonic) it saw the consumer disconnected
        self.received: dict[str, tuple[int, int]] = {}  # per (full) topic: the last (ledger, entry) received
        self.gave_up: dict[str, tuple[int, int]] = {}  # per topic: an appended message a fetch stopped waiting for
        self.version = 0  # bumped by every change of ``held`` or of a lease (``drain`` rescans on one)
        self.ledger: AttemptLedger | None = None  # set by ``attach``
        self._warned = 0.0

    def attach(self, open_ledger: Callable[[], AttemptLedger]) -> None:
        """Open the subscription's attempt ledger for this consumer; on failure the consumer is closed."""
        try:
            self.ledger = open_ledger()
        except BaseException:
            with contextlib.suppress(BaseException):
                self.consumer.close()
            raise

    # -- receiving ---------------------------------------------------------------------------
    def receive(self, timeout: float) -> bool:
        """Take one message from the client's queue into ``held``; False on timeout."""
        return self._receive(timeout) is not None

    def _receive(self, timeout: float) -> Held | None:
        """Take one message into ``held`` and return its entry; ``None`` on timeout (``timeout`` 0: only
        a message already in the client's queue)."""
        started = time.monotonic()
        if not (self.receiving.acquire(timeout=timeout) if timeout > 0 else self.receiving.acquire(False)):
            return None
        try:
            return self._receive_one(timeout - (time.monotonic() - started))
        finally:
            self.receiving.release()

    def _settled(self, positions: Sequence[str]) -> None:
        """Remember acked positions (lock held)."""
        settled = self.settled
        for position in positions:
            settled[position] = None
        while len(settled) > _SETTLED_KEEP:
            del settled[next(iter(settled))]

    def _receive_one(self, timeout: float) -> Held | None:
        deadline = time.monotonic() + timeout
        while True:
            held, settled = self._receive_next(timeout)
            if not settled:
                return held
            timeout = max(0.0, deadline - time.monotonic()) if timeout > 0 else 0.0

    def _receive_next(self, timeout: float) -> tuple[Held | None, bool]:
        """The next message, or (None, True) for a copy of one acked lately, acked again and dropped."""
        import pulsar

        try:
            msg = self.native.receive(0 if timeout <= 0 else max(1, int(timeout * 1000)))
        except pulsar.Timeout:
            return None, False
        except BaseException:
            if self.closed:
                return None, False  # closed by another thread meanwhile: what it held comes again to its successor
            with pulsar_errors(f"receive on {self.topic}/{self.subscription}"):
                raise
            raise
        msg_id = msg.message_id()
        message = to_message(msg, self.topic, msg_id)
        if message.position in self.settled:
            # the broker redelivers what was unacked when a connection broke, even if acked since
            # (over the new connection): ack the copy again, it must not be handled twice
            with contextlib.suppress(Exception):
                self.native.acknowledge(msg)
            return None, True
        at, topic = (msg_id.ledger_id(), msg_id.entry_id()), msg.topic_name()
        held = Held(msg, message, at, self.ledger is not None and self.ledger.is_retry(topic))
        with self.lock:
            if self.closed:
                return None, False
            if at > self.received.get(topic, _NOTHING):
                self.received[topic] = at
            replaced = message.position in self.held
            self.held[message.position] = held
            self.version += 1
            held.first_receipt = not replaced
        return held, False

    def _awaited(self, expect: Mapping[str, tuple[int, int]]) -> bool:
        """Whether a message this process appended (``expect``: topic → its (ledger, entry)) has not come
        yet, and no fetch gave up waiting for it (it may have gone to another process's consumer)."""
        return any(self.received.get(topic, _NOTHING) < at and self.gave_up.get(topic) != at
                   for topic, at in expect.items())

    def _give_up(self, expect: Mapping[str, tuple[int, int]]) -> None:
        with self.lock:
            self.gave_up.update(expect)

    def drain(self, consumer: str, want: int, first_wait: float, gap: float, most: float,
              expect: Mapping[str, tuple[int, int]]) -> None:
        """Receive until ``consumer`` could lease ``want``: waiting up to ``first_wait`` while it could
        lease none, then ``gap`` for each next message (what the broker dispatched together arrives
        together), for ``most`` seconds in all from the first leasable one (a busy topic never makes a
        fetch wait for a whole batch). While the last message this process appended to the topic
        (``expect``) has not come, it waits for it up to ``most`` instead of ``gap``: the broker may
        dispatch the messages of one append up to ~10 ms apart (its new-entries check delay), and a fetch
        right after an append sees all of it.

        What is leasable is counted by one scan of ``held`` (``_scan``), then kept up to date per
        message received: a new message at the end of ``held`` is leasable unless its key is blocked
        (key_ordered) or something before it is (exclusive). Anything else that changes the count (a
        lease, ack, nack or extend by another thread, a lease or retry coming due, a redelivery of a
        held message) makes it scan again."""
        start = time.monotonic()
        collecting = 0.0  # when the first leasable message was in hand
        awaited: bool | None = None  # whether this process's last appended message is still to come
        with self.lock:
            scan = self._scan(consumer, want, time.time())
        leasable = scan.count
        while leasable < want:
            now = time.monotonic()
            if leasable == 0:
                # something here is in flight or waiting for its retry: the caller settles it and asks
                # again, so waiting the whole first_wait would hold up its acks (exclusive ran at
                # 140/s); unless what this process appended last has still to come
                short = scan.due != float("inf") and not (expect and self._awaited(expect))
                wait = (min(first_wait, gap) if short else first_wait) - (now - start)
                if wait <= 0:
                    return
            else:
                collecting = collecting or now
                awaited = awaited is not False and bool(expect) and self._awaited(expect)  # once come, stays come
                wait = most - (now - collecting) if awaited else min(gap, most - (now - collecting))
                if wait <= 0:
                    if awaited:
                        self._give_up(expect)
                    return
            held = self._receive(wait)
            if held is None:
                if leasable and awaited:
                    self._give_up(expect)
                return
            with self.lock:
                wall = time.time()
                if held.first_receipt and self.version == scan.version + 1 and wall < scan.due:
                    scan.version = self.version
                    if not scan.stopped and not (self.mode is Mode.KEY_ORDERED
                                                 and held.message.record.key in scan.blocked):
                        scan.count += 1
                else:
                    scan = self._scan(consumer, want, wall)
                leasable = scan.count

    # -- leasing -----------------------------------------------------------------------------
    @_locked
    def lease(self, consumer: str, limit: int, lease: float) -> list[Delivery]:
        """Lease what ``consumer`` may take, once the attempt ledger has it: a message new here is looked
        up there first (attempts started elsewhere, their errors), and the batch is recorded there before
        it is returned. With the ledger unwritable (the broker unreachable) nothing is leased."""
        now = time.time()
        chosen = self._choose(consumer, limit, now)
        if self.mode is Mode.EXCLUSIVE:
            if self.owner not in (None, consumer) and self.owner_expires > now:
                return []
            self.owner, self.owner_expires = consumer, now + lease
        if not chosen:
            self.version += 1
            return []
        ledger = self.ledger
        if ledger is not None:
            try:
                new = [h for h in chosen if not h.looked]
                if new:
                    found = ledger.lookup([h.message.position for h in new])
                    for h in new:
                        h.looked = True
                        known = found.get(h.message.position)
                        if known is not None:
                            h.before, h.history = known.started, [*known.history, *h.history]
                for h in chosen:
                    h.leases += 1
                try:
                    ledger.record({h.message.position: cast(Attempts, h.state()) for h in chosen})
                except StoreError:
                    for h in chosen:
                        h.leases -= 1
                        ledger.change(h.message.position, h.state())  # rewritten with the next write
                    raise
            except StoreError as exc:
                if time.monotonic() - self._warned > _WARN_EVERY:
                    self._warned = time.monotonic()
                    log.warning("edbus: %s/%s: nothing leased, the attempt ledger cannot be read or written: %s",
                                self.topic, self.subscription, exc)
                return []
        else:
            for h in chosen:
                h.leases += 1
        self.version += 1
        token = _rng.getrandbits(62)
        out: list[Delivery] = []
        for h in chosen:
            h.owner, h.lease_expires, h.token = consumer, now + lease, token
            out.append(Delivery(h.message, self.subscription, h.before + h.leases, tuple(h.history),
                                (self, h.message.position, token)))
        return out

    @_locked
    def _scan(self, consumer: str, limit: int, now: float) -> _Scan:
        """``_choose``'s count, with what ``drain`` needs to update it per new message."""
        blocked: set[str | None] = set()
        due = float("inf")
        if self.mode is Mode.EXCLUSIVE and self.owner not in (None, consumer) and self.owner_expires > now:
            return _Scan(0, blocked, True, self.owner_expires, self.version)
        count = 0
        stopped = False
        for h in self.held.values():
            if count >= limit:
                break
            if not h.free(now):
                due = min(due, max(h.lease_expires, h.available_at))
                if self.mode is Mode.EXCLUSIVE:
                    stopped = True
                    break
                blocked.add(h.message.record.key)
                continue
            if self.mode is Mode.KEY_ORDERED and h.message.record.key in blocked:
                continue
            count += 1
        return _Scan(count, blocked, stopped, due, self.version)

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
            self.native.acknowledge(h.raw)
        del self.held[position]
        self.version += 1
        self._settled((position,))
        if self.ledger is not None:
            self.ledger.settle((position,))
        return True

    @_locked
    def ack_many(self, handles: Sequence[tuple[str, int]]) -> None:
        """``ack`` of each (position, token), in order, under one hold of the lock."""
        held = self.held  # empty once closed: acks of a replaced consumer's leases do nothing
        done = []
        try:
            with pulsar_errors(f"ack on {self.topic}/{self.subscription}"):
                for position, token in handles:
                    h = held.get(position)
                    if h is None or h.token != token:
                        continue  # a stale lease: the message went to another consumer meanwhile
                    self.native.acknowledge(h.raw)
                    del held[position]
                    self.version += 1
                    done.append(position)
        finally:
            self._settled(done)
            if done and self.ledger is not None:
                self.ledger.settle(done)

    @_locked
    def nack(self, position: str, token: int, delay: float, error: ErrorInfo | None) -> None:
        h = self.find(position, token)
        if h is None:
            return
        if error is not None:
            h.history = list(add_failure(h.history, error))
        else:
            h.leases -= 1
        h.owner, h.lease_expires, h.token, h.available_at = None, 0.0, 0, time.time() + delay
        self.version += 1
        if self.ledger is not None:
            self.ledger.change(position, h.state())  # deferred: written by the next lease or ``flush``

    def flush(self) -> None:
        """Make the attempt ledger's deferred changes (failed and released leases) durable."""
        if self.ledger is not None and not self.closed:
            self.ledger.flush()

    @_locked
    def extend(self, position: str, token: int, lease: float) -> None:
        h = self.find(position, token)
        if h is not None:
            h.lease_expires = time.time() + lease
            self.version += 1
            if self.mode is Mode.EXCLUSIVE and self.owner == h.owner:
                self.owner_expires = h.lease_expires

    @_locked
    def close(self) -> None:
        """Release everything held (a lease still running counts as released in the attempt ledger: a
        graceful close blames nothing), then close the consumer: the broker redelivers what was held."""
        if self.ledger is not None and not self.closed:
            self.ledger.close({p: h.state(1 if h.owner is not None else 0) for p, h in self.held.items()})
        self.closed = True
        self.held.clear()
        self.version += 1
        with contextlib.suppress(BaseException):
            self.consumer.close()
