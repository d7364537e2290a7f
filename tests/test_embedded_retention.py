"""Retention on the embedded store, event by event. (On Pulsar retention is the namespace's policy,
applied by the broker to whole ledgers: the contract suite proves only that nothing unacked goes.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edbus.backends import Backend, Mode, StartAt, open_backend
from tests.contract.test_backend_contract import ids, rec


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    b = open_backend(f"sqlite:///{tmp_path}/edbus.db")
    yield b
    b.close()


class TestEmbeddedRetention:
    def test_an_unsubscribed_subscription_no_longer_holds_its_events(self, backend: Backend) -> None:
        backend.subscribe("t", "gone", Mode.SHARED, StartAt())
        backend.append("t", [rec(1, None)])
        backend.fetch("t", "gone", "c", 10, 30)
        backend.unsubscribe("t", "gone")
        assert backend.enforce_retention(time.time() + 1) == 1  # nothing holds the event any more

    def test_retention_deletes_only_events_every_subscription_acked(self, backend: Backend) -> None:
        backend.subscribe("t", "fast", Mode.SHARED, StartAt())
        backend.subscribe("t", "slow", Mode.SHARED, StartAt())
        backend.append("t", [rec(i, None) for i in range(4)])
        backend.ack(backend.fetch("t", "fast", "c", 10, 30))
        slow = backend.fetch("t", "slow", "c", 10, 30)
        backend.ack([d for d in slow if d.message.record.id in ("e0", "e1", "e3")])
        deleted = backend.enforce_retention(time.time() + 1)
        assert deleted == 2  # e0, e1; e2 is unacked by slow, so e2 and e3 stay
        assert [m.record.id for m in backend.read("t", StartAt("earliest"), 10)] == ["e2", "e3"]

    def test_positions_are_never_reused_after_the_newest_events_are_deleted(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.append("t", [rec(i, None) for i in range(3)])
        backend.ack(backend.fetch("t", "s", "c", 10, 30))
        assert backend.enforce_retention(time.time() + 1) == 3  # every event gone, the newest too
        backend.append("t", [rec(9, None)])
        assert ids(backend.fetch("t", "s", "c", 10, 30)) == ["e9"]  # not hidden behind the cursor
