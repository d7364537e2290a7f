"""The backend contract: every backend passes these tests unchanged (fixture ``backend`` per backend). The
optional retention capability has its own tests (``test_retention_capability.py``)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edbus.backends import Backend, ErrorInfo, Mode, Record, StartAt, SubscriptionStats, dlq_topic, open_backend
from edbus.errors import ConfigError, NotFoundError
from tests.conftest import eventually


def rec(i: int, key: str | None = "k", id: str | None = None) -> Record:
    return Record(id or f"e{i}", "org.openedx.test.item.made.v1", key, {"ce_id": id or f"e{i}"}, b"p%d" % i)


ROOT = Path(__file__).resolve().parents[2]
# appends e1..e5 with sequences 1..5, then exits without closing anything (as a SIGKILL would leave it)
_DIES_AFTER_APPEND = """
import dataclasses, os, sys
from edbus.backends import open_backend
from tests.contract.test_backend_contract import rec
open_backend(sys.argv[1]).append("t", [dataclasses.replace(rec(i), sequence=i) for i in range(1, 6)])
os._exit(0)
"""

# leases e1 (attempt printed) for 0.5 s and dies holding it, without closing anything
_DIES_HOLDING_A_LEASE = """
import os, sys, time
from edbus.backends import open_backend
backend = open_backend(sys.argv[1])
deadline = time.monotonic() + 60
got = []
while not got and time.monotonic() < deadline:
    got = backend.fetch("t", "s", "doomed", 10, 0.5)
print(" ".join(f"{d.message.record.id}:{d.attempt}" for d in got), flush=True)
os._exit(0)
"""


def ids(deliveries: list) -> list[str]:  # type: ignore[type-arg]
    return [d.message.record.id for d in deliveries]


def error(msg: str = "boom") -> ErrorInfo:
    return ErrorInfo("builtins.RuntimeError", msg, "Traceback ...", time.time(), 1)


def settled(backend: Backend, topic: str,
            check: Callable[[list[SubscriptionStats]], bool]) -> list[SubscriptionStats]:
    """The topic's subscription stats once ``check`` holds. Acks reach Pulsar's stats asynchronously
    (its client groups acks for up to 100 ms); on the embedded store the first look holds already."""
    found: list[list[SubscriptionStats]] = []

    def look() -> bool:
        found[:] = [backend.subscriptions(topic)]
        return check(found[0])

    eventually(look, timeout=5)
    return found[0]


class TestAppendAndRead:
    def test_appended_records_are_read_back_in_order_with_headers_and_payload(self, backend: Backend) -> None:
        backend.append("t", [rec(i) for i in range(5)])
        got = backend.read("t", StartAt("earliest"), 10)
        assert [m.record.id for m in got] == [f"e{i}" for i in range(5)]
        assert got[2].record.payload == b"p2" and got[2].record.headers == {"ce_id": "e2"}
        assert got[0].topic == "t" and got[0].published_at <= time.time()

    def test_same_event_id_is_stored_once_within_and_across_appends(self, backend: Backend) -> None:
        backend.append("t", [rec(1), rec(1), rec(2)])
        backend.append("t", [rec(1), rec(3)])
        assert [m.record.id for m in backend.read("t", StartAt("earliest"), 10)] == ["e1", "e2", "e3"]

    def test_a_retry_by_the_process_started_in_place_of_a_dead_one_is_stored_once(self, url: str) -> None:
        """A producer process dies after the store took its publish and before it knew; the process
        started in its place (same producer name) retries with the same ids and sequences."""
        named = url + ("&" if "?" in url else "?") + "producer=relay-1"
        subprocess.run([sys.executable, "-c", _DIES_AFTER_APPEND, named], check=True, timeout=120, cwd=ROOT)
        again = open_backend(named)
        try:
            again.append("t", [dataclasses.replace(rec(i), sequence=i) for i in range(3, 8)])
            assert [m.record.id for m in again.read("t", StartAt("earliest"), 20)] == [f"e{i}" for i in range(1, 8)]
        finally:
            again.close()

    def test_read_pages_after_a_position(self, backend: Backend) -> None:
        backend.append("t", [rec(i) for i in range(5)])
        first = backend.read("t", StartAt("earliest"), 2)
        rest = backend.read("t", StartAt("earliest"), 10, after=first[-1].position)
        assert [m.record.id for m in first + rest] == [f"e{i}" for i in range(5)]

    def test_read_from_event_id_and_from_time(self, backend: Backend) -> None:
        backend.append("t", [rec(i) for i in range(3)])
        cut = time.time()
        eventually(lambda: time.time() > cut + 0.01)
        backend.append("t", [rec(i) for i in range(3, 5)])
        assert next(m.record.id for m in backend.read("t", StartAt("event", event_id="e1"), 10)) == "e1"
        assert [m.record.id for m in backend.read("t", StartAt("time", time=cut + 0.005), 10)] == ["e3", "e4"]
        assert backend.read("t", StartAt("latest"), 10) == []

    def test_topics_are_independent(self, backend: Backend) -> None:
        backend.append("a", [rec(1)])
        backend.append("b", [rec(1), rec(2)])
        stats = {t.topic: t for t in backend.topics()}
        assert stats["a"].events == 1 and stats["b"].events == 2 and stats["b"].bytes > 0


class TestSubscriptions:
    def test_subscription_from_earliest_sees_history_and_latest_does_not(self, backend: Backend) -> None:
        backend.append("t", [rec(1)])
        backend.subscribe("t", "old", Mode.SHARED, StartAt("earliest"))
        backend.subscribe("t", "new", Mode.SHARED, StartAt("latest"))
        backend.append("t", [rec(2)])
        assert ids(backend.fetch("t", "old", "c", 10, 30)) == ["e1", "e2"]
        assert ids(backend.fetch("t", "new", "c", 10, 30)) == ["e2"]

    def test_resubscribing_in_another_mode_is_refused(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        with pytest.raises(ConfigError, match="exists in mode shared"):
            backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())

    def test_unsubscribe_deletes_the_subscription_and_stops_holding_events(self, backend: Backend) -> None:
        backend.subscribe("t", "gone", Mode.SHARED, StartAt())
        backend.append("t", [rec(1, None)])
        backend.fetch("t", "gone", "c", 10, 30)
        backend.unsubscribe("t", "gone")
        assert backend.subscriptions("t") == []
        with pytest.raises(NotFoundError):
            backend.unsubscribe("t", "gone")
        with pytest.raises(NotFoundError):
            backend.fetch("t", "gone", "c", 10, 30)

    def test_a_subscription_deleted_by_another_process_is_not_found_by_this_one(self, backend: Backend,
                                                                             url: str) -> None:
        from edbus.backends import open_backend

        backend.subscribe("a", "x", Mode.SHARED, StartAt())
        backend.append("a", [rec(1, None)])
        backend.fetch("a", "x", "c", 10, 30)
        other = open_backend(url)
        other.unsubscribe("a", "x")
        other.subscribe("b", "y", Mode.SHARED, StartAt())
        other.append("b", [rec(7, None)])
        with pytest.raises(NotFoundError):
            backend.fetch("a", "x", "c", 10, 30)
        assert ids(backend.fetch("b", "y", "c", 10, 30)) == ["e7"]  # y did not inherit x's state
        other.close()

    def test_fetch_on_unknown_subscription_raises_not_found(self, backend: Backend) -> None:
        with pytest.raises(NotFoundError):
            backend.fetch("t", "nope", "c", 10, 30)

    def test_leased_events_are_not_given_to_another_consumer(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.append("t", [rec(i, key=None) for i in range(4)])
        a = backend.fetch("t", "s", "a", 2, 30)
        b = backend.fetch("t", "s", "b", 10, 30)
        assert ids(a) == ["e0", "e1"] and ids(b) == ["e2", "e3"]
        assert backend.fetch("t", "s", "c", 10, 30) == []

    def test_acked_events_are_done_and_backlog_drops_to_zero(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.append("t", [rec(i, key=None) for i in range(3)])
        got = backend.fetch("t", "s", "a", 10, 30)
        [stats] = backend.subscriptions("t")
        assert stats.backlog == 3 and stats.in_flight == 3 and stats.oldest_unacked_age is not None
        backend.ack(got)
        [stats] = settled(backend, "t", lambda s: s[0].backlog == 0)
        assert stats.in_flight == 0 and stats.oldest_unacked_age is None
        assert backend.fetch("t", "s", "a", 10, 30) == []

    def test_expired_lease_is_redelivered_to_another_consumer_with_next_attempt(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
        backend.append("t", [rec(1)])
        [first] = backend.fetch("t", "s", "dies", 10, 0.2)
        assert first.attempt == 1
        [again] = eventually(lambda: backend.fetch("t", "s", "other", 10, 30), timeout=5)
        assert again.message.record.id == "e1" and again.attempt == 2
        backend.ack([first])  # a stale ack from the dead lease does not ack the new one
        [stats] = backend.subscriptions("t")
        assert stats.backlog == 1
        backend.ack([again])
        settled(backend, "t", lambda s: s[0].backlog == 0)

    def test_extend_keeps_a_lease(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.append("t", [rec(1)])
        got = backend.fetch("t", "s", "a", 10, 0.3)
        backend.extend(got, 30)
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            assert backend.fetch("t", "s", "b", 10, 30) == []
            backend.wait(0.05)

    def test_nack_redelivers_after_the_delay_and_counts_the_attempt(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.append("t", [rec(1)])
        [d] = backend.fetch("t", "s", "a", 10, 30)
        backend.nack(d, 0.3, error("first"))
        assert backend.fetch("t", "s", "a", 10, 30) == []
        [d2] = eventually(lambda: backend.fetch("t", "s", "a", 10, 30), timeout=5)
        assert d2.attempt == 2 and [h.message for h in d2.history] == ["first"]

    def test_release_without_error_does_not_count_an_attempt(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.append("t", [rec(1)])
        [d] = backend.fetch("t", "s", "a", 10, 30)
        backend.nack(d, 0, None)
        [d2] = backend.fetch("t", "s", "a", 10, 30)
        assert d2.attempt == 1 and d2.history == ()


class TestAttemptsAcrossProcesses:
    """``attempt`` counts deliveries on every consumer of the subscription, in any process: Pulsar's own
    redelivery count stays 0 when a consumer dies (its backend keeps an attempt ledger instead)."""

    @pytest.mark.parametrize("mode", list(Mode))
    def test_a_lease_held_by_a_process_that_died_counts_as_an_abandoned_attempt(self, url: str, backend: Backend,
                                                                                mode: Mode) -> None:
        backend.subscribe("t", "s", mode, StartAt())
        backend.append("t", [rec(1)])
        done = subprocess.run([sys.executable, "-c", _DIES_HOLDING_A_LEASE, url], check=True, timeout=120,
                              cwd=ROOT, capture_output=True, text=True)
        assert done.stdout.split() == ["e1:1"]
        [again] = eventually(lambda: backend.fetch("t", "s", "heir", 10, 30), timeout=30)
        assert again.message.record.id == "e1" and again.attempt == 2
        assert again.history == () and again.abandoned == 1

    def test_a_retry_pending_when_its_consumer_closes_keeps_its_attempt_and_error_for_the_next(
            self, url: str, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
        backend.append("t", [rec(1)])
        first = open_backend(url)
        try:
            [d] = first.fetch("t", "s", "a", 10, 30)
            first.nack(d, 0.0, error("first"))
        finally:
            first.close()
        [again] = eventually(lambda: backend.fetch("t", "s", "b", 10, 30), timeout=30)
        assert again.attempt == 2 and [h.message for h in again.history] == ["first"] and again.abandoned == 0


class TestKeyOrder:
    def test_key_ordered_never_leases_a_key_to_two_consumers(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
        backend.append("t", [rec(i, key="a" if i % 2 else "b") for i in range(6)])
        first = backend.fetch("t", "s", "c1", 1, 30)  # e0 (key b) only
        second = backend.fetch("t", "s", "c2", 10, 30)  # key a is free, key b is held by c1
        assert ids(first) == ["e0"] and ids(second) == ["e1", "e3", "e5"]
        assert backend.fetch("t", "s", "c3", 10, 30) == []
        backend.ack(first)
        assert ids(backend.fetch("t", "s", "c3", 10, 30)) == ["e2", "e4"]

    def test_keys_spread_over_consumers(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
        backend.append("t", [rec(i, key=f"k{i}") for i in range(4)])
        a = backend.fetch("t", "s", "a", 2, 30)
        b = backend.fetch("t", "s", "b", 2, 30)
        assert len(a) == 2 and len(b) == 2 and not set(ids(a)) & set(ids(b))

    def test_a_retrying_event_holds_back_later_events_of_its_key_only(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
        backend.append("t", [rec(0, "a"), rec(1, "b"), rec(2, "a")])
        got = backend.fetch("t", "s", "c", 10, 30)
        assert ids(got) == ["e0", "e1", "e2"]
        backend.ack([got[1]])
        backend.nack(got[0], 0.3, error())
        backend.nack(got[2], 0, None)
        backend.append("t", [rec(3, "b")])
        assert ids(backend.fetch("t", "s", "c", 10, 30)) == ["e3"]  # key b goes on
        assert ids(eventually(lambda: backend.fetch("t", "s", "c", 10, 30), timeout=5)) == ["e0", "e2"]

    def test_shared_mode_does_not_hold_keys(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.append("t", [rec(i, key="same") for i in range(2)])
        assert ids(backend.fetch("t", "s", "a", 1, 30)) == ["e0"]
        assert ids(backend.fetch("t", "s", "b", 1, 30)) == ["e1"]


class TestExclusive:
    def test_exclusive_delivers_in_total_order_and_a_retry_holds_everything_behind_it(
            self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.EXCLUSIVE, StartAt())
        backend.append("t", [rec(i, key=f"k{i}") for i in range(3)])
        first = backend.fetch("t", "s", "c", 1, 30)
        assert backend.fetch("t", "s", "c", 10, 30) == []  # e0 in flight: nothing else, any key
        backend.nack(first[0], 0.3, error())
        assert backend.fetch("t", "s", "c", 10, 30) == []  # e0 waits for its retry: so does the rest
        assert ids(eventually(lambda: backend.fetch("t", "s", "c", 10, 30), timeout=5)) == ["e0", "e1", "e2"]

    def test_one_active_consumer_and_a_standby_takes_over_when_it_dies(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.EXCLUSIVE, StartAt())
        backend.append("t", [rec(i, key=f"k{i}") for i in range(3)])
        got = backend.fetch("t", "s", "active", 1, 0.3)
        assert ids(got) == ["e0"]
        assert backend.fetch("t", "s", "standby", 10, 0.3) == []
        # the active consumer dies: nothing renews its lease, the standby takes over and gets e0 again
        taken = eventually(lambda: backend.fetch("t", "s", "standby", 10, 30), timeout=5)
        assert ids(taken) == ["e0", "e1", "e2"]
        assert backend.fetch("t", "s", "active", 10, 30) == []


class TestDeadLetters:
    def test_dead_letter_moves_the_event_with_error_and_history(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
        backend.append("t", [rec(1)])
        [d] = backend.fetch("t", "s", "c", 10, 30)
        backend.nack(d, 0, error("first"))
        [d] = backend.fetch("t", "s", "c", 10, 30)
        backend.dead_letter(d, error("second"))
        settled(backend, "t", lambda s: s[0].backlog == 0 and s[0].dead_lettered == 1)
        [dead] = backend.read(dlq_topic("t", "s"), StartAt("earliest"), 10)
        h = dead.record.headers
        assert dead.record.id == "e1" and dead.record.payload == b"p1"
        assert h["edbus_dlq_error_type"] == "builtins.RuntimeError" and h["edbus_dlq_error_message"] == "second"
        assert h["edbus_dlq_attempts"] == "2" and "first" in h["edbus_dlq_history"]
        assert h["edbus_dlq_traceback"].startswith("Traceback") and h["ce_id"] == "e1"

    def test_redrive_gives_dead_letters_back_to_the_subscription_only(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.subscribe("t", "other", Mode.SHARED, StartAt())
        backend.append("t", [rec(1, None), rec(2, None)])
        backend.ack(backend.fetch("t", "other", "c", 10, 30))
        for d in backend.fetch("t", "s", "c", 10, 30):
            backend.dead_letter(d, error())
        assert backend.redrive("t", "s", ["e2"]) == 1
        settled(backend, "t", lambda s: [x.backlog for x in s if x.subscription == "s"] == [1])
        again = backend.fetch("t", "s", "c", 10, 30)
        assert ids(again) == ["e2"] and again[0].attempt == 1
        assert backend.fetch("t", "other", "c", 10, 30) == []
        assert backend.purge_dead_letters("t", "s", None) == 1
        settled(backend, "t", lambda s: [x.dead_lettered for x in s if x.subscription == "s"] == [0])


class TestReplay:
    def test_seek_to_earliest_time_and_event_id_redelivers_from_there(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.append("t", [rec(i, None) for i in range(3)])
        cut = time.time()
        eventually(lambda: time.time() > cut + 0.01)
        backend.append("t", [rec(i, None) for i in range(3, 5)])
        backend.ack(backend.fetch("t", "s", "c", 10, 30))
        backend.seek("t", "s", StartAt("earliest"))
        assert len(backend.fetch("t", "s", "c", 10, 30)) == 5
        backend.seek("t", "s", StartAt("time", time=cut + 0.005))
        assert ids(backend.fetch("t", "s", "c", 10, 30)) == ["e3", "e4"]
        backend.seek("t", "s", StartAt("event", event_id="e2"))
        assert ids(backend.fetch("t", "s", "c", 10, 30)) == ["e2", "e3", "e4"]
        with pytest.raises(NotFoundError):
            backend.seek("t", "s", StartAt("event", event_id="nope"))
