"""The backend contract has a small core (``Backend``) and opt-in parts (``Administrable``,
``RetentionCapable``): a backend with only the core carries the bus's publishing and consuming, and what
needs administration says in one line that it is missing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from edbus import Bus, Event
from edbus.backends import Backend, Delivery, ErrorInfo, Mode, Record, StartAt
from edbus.backends.base import Administrable, RetentionCapable, administrable
from edbus.backends.pulsar import PulsarBackend
from edbus.backends.sqlite import SqliteBackend
from edbus.errors import ConfigError
from edbus.schema.registry import SchemaRegistry
from tests.events import SEQ, Seq

CORE = {"registry", "append", "subscribe", "fetch", "ack", "nack", "dead_letter", "extend", "wait", "close"}
ADMINISTRATION = {"unsubscribe", "seek", "read", "redrive", "purge_dead_letters", "topics", "subscriptions"}


class CoreOnly(Backend):
    """The embedded store seen through the core contract alone, as a third backend with no administration
    would be."""

    def __init__(self, inner: SqliteBackend) -> None:
        self.inner, self.url = inner, inner.url

    @property
    def registry(self) -> SchemaRegistry:
        return self.inner.registry

    def append(self, topic: str, records: Sequence[Record]) -> None:
        self.inner.append(topic, records)

    def subscribe(self, topic: str, subscription: str, mode: Mode, start: StartAt) -> None:
        self.inner.subscribe(topic, subscription, mode, start)

    def fetch(self, topic: str, subscription: str, consumer: str, limit: int, lease: float) -> list[Delivery]:
        return self.inner.fetch(topic, subscription, consumer, limit, lease)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.inner.ack(deliveries)

    def nack(self, delivery: Delivery, delay: float, error: ErrorInfo | None) -> None:
        self.inner.nack(delivery, delay, error)

    def dead_letter(self, delivery: Delivery, error: ErrorInfo) -> None:
        self.inner.dead_letter(delivery, error)

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> None:
        self.inner.extend(deliveries, lease)

    def wait(self, timeout: float) -> None:
        self.inner.wait(timeout)

    def close(self) -> None:
        self.inner.close()


def test_the_core_is_what_producing_and_consuming_need_and_administration_is_a_part_of_its_own() -> None:
    assert set(Backend.__abstractmethods__) == CORE
    assert set(Administrable.__abstractmethods__) == ADMINISTRATION
    assert set(RetentionCapable.__abstractmethods__) == {"enforce_retention"}
    assert issubclass(SqliteBackend, Administrable) and issubclass(PulsarBackend, Administrable)


def test_a_backend_with_only_the_core_publishes_and_consumes_through_the_bus(tmp_path: Path) -> None:
    with Bus(CoreOnly(SqliteBackend.from_url(f"sqlite:///{tmp_path / 'core.db'}")), retention=None) as bus:
        bus.publish_many("items", [(SEQ, Seq("k", n)) for n in range(20)])
        got: list[int] = []
        consumer = bus.consumer("items", "s")

        @consumer.handler(SEQ)
        def on_item(event: Event[Seq]) -> None:
            got.append(event.data.n)

        assert consumer.run(max_events=20, idle_timeout=10, install_signals=False) == 20
        assert got == list(range(20))


def test_administration_asked_of_a_backend_without_it_is_refused_in_one_line(tmp_path: Path) -> None:
    with Bus(CoreOnly(SqliteBackend.from_url(f"sqlite:///{tmp_path / 'core.db'}")), retention=None) as bus:
        for ask in (bus.topics, lambda: bus.subscriptions("items"), lambda: bus.seek("items", "s", "earliest"),
                    lambda: list(bus.read("items"))):
            with pytest.raises(ConfigError, match=r"^CoreOnly has no administration \(stats, read, seek") as err:
                ask()
            assert "\n" not in str(err.value)
        with pytest.raises(ConfigError):
            administrable(bus.backend)
