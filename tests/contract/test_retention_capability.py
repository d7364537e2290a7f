"""Retention is an optional capability of a backend (``RetentionCapable``): the embedded store deletes old
acked events itself, Pulsar leaves it to the namespace's retention policy. The retention contract runs on
every backend that has the capability, and the callers (the consumer's sweeper, ``edbus retention``) say
in one line when a backend leaves retention to its broker."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from edbus.backends import Backend, Mode, StartAt, open_backend
from edbus.backends.base import RetentionCapable, retention_capable
from edbus.backends.pulsar import PulsarBackend
from edbus.backends.sqlite import SqliteBackend
from edbus.bus.retention import RetentionSweeper
from edbus.cli.main import cli
from tests.conftest import BACKENDS, backend_url
from tests.contract.test_backend_contract import error, ids, rec

CLASSES: dict[str, type[Backend]] = {"sqlite": SqliteBackend, "pulsar": PulsarBackend}
RETAINING = [kind for kind in BACKENDS if issubclass(CLASSES[kind], RetentionCapable)]


@pytest.fixture(params=RETAINING)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend that enforces retention itself (this module's ``backend`` hides the contract's)."""
    b = open_backend(backend_url(request.param, tmp_path))
    yield b
    b.close()


def sweep(backend: Backend, older_than: float) -> int:
    capable = retention_capable(backend)
    assert capable is not None
    return capable.enforce_retention(older_than)


def test_the_embedded_store_enforces_retention_and_pulsar_leaves_it_to_the_broker() -> None:
    assert RETAINING == ["sqlite"]  # the tests below run there, and nowhere they would pass trivially
    assert issubclass(SqliteBackend, RetentionCapable)
    assert not issubclass(PulsarBackend, RetentionCapable) and not hasattr(PulsarBackend, "enforce_retention")


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_backend_without_retention_says_so_once_to_the_consumer_and_to_the_cli(
        kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = backend_url(kind, tmp_path)
    with open_backend(url) as b:
        assert (retention_capable(b) is not None) == (kind in RETAINING)
        with caplog.at_level(logging.INFO, logger="edbus.consumer"):
            sweeper = RetentionSweeper.for_backend(b, 3600.0)
            assert RetentionSweeper.for_backend(b, None) is None  # no retention asked: no sweeper, no word
    said = [r.getMessage() for r in caplog.records if "leaves retention to its broker" in r.getMessage()]
    done = CliRunner().invoke(cli, ["--url", url, "retention", "--older-than", "1h"], env={"EDBUS_URL": None})
    assert done.exit_code == 0, done.output
    if kind in RETAINING:
        assert sweeper is not None and sweeper.retention == 3600.0 and said == []
        assert done.output.startswith("deleted 0 event(s)")
    else:
        assert sweeper is None and len(said) == 1
        assert done.output == f"{type(b).__name__} leaves retention to its broker's own policy (on Pulsar the " \
            "namespace's retention, docs/pulsar.md): nothing is deleted from here\n"


class TestRetention:
    def test_retention_never_deletes_an_event_a_subscription_has_not_acked(self, backend: Backend) -> None:
        backend.subscribe("t", "fast", Mode.SHARED, StartAt())
        backend.subscribe("t", "slow", Mode.SHARED, StartAt())
        backend.append("t", [rec(i, None) for i in range(4)])
        backend.ack(backend.fetch("t", "fast", "c", 10, 30))
        slow = backend.fetch("t", "slow", "c", 10, 30)
        backend.ack([d for d in slow if d.message.record.id in ("e0", "e1", "e3")])
        sweep(backend, time.time() + 1)
        assert [m.record.id for m in backend.read("t", StartAt("earliest"), 10)][-2:] == ["e2", "e3"]
        backend.nack(next(d for d in slow if d.message.record.id == "e2"), 0, None)
        assert ids(backend.fetch("t", "slow", "c", 10, 30)) == ["e2"]

    def test_retention_keeps_dead_lettered_events_so_a_later_redrive_reaches_only_their_subscription(
            self, backend: Backend) -> None:
        backend.subscribe("t", "failing", Mode.SHARED, StartAt())
        backend.subscribe("t", "fine", Mode.SHARED, StartAt())
        backend.append("t", [rec(1, None), rec(2, None)])
        backend.ack(backend.fetch("t", "fine", "c", 10, 30))
        for d in backend.fetch("t", "failing", "c", 10, 30):
            backend.dead_letter(d, error())
        assert sweep(backend, time.time() + 1) == 0  # acked by all, but dead-lettered
        assert backend.redrive("t", "failing", None) == 2
        assert ids(backend.fetch("t", "failing", "c", 10, 30)) == ["e1", "e2"]
        assert backend.fetch("t", "fine", "c", 10, 30) == []

    def test_retention_keeps_events_younger_than_the_period(self, backend: Backend) -> None:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.append("t", [rec(1, None)])
        backend.ack(backend.fetch("t", "s", "c", 10, 30))
        assert sweep(backend, time.time() - 3600) == 0
        assert len(backend.read("t", StartAt("earliest"), 10)) == 1
