"""A ``before_publish`` middleware that raises stops the publish (fails closed), on every backend: nothing is
stored, the caller gets the middleware's exception, the log names the events by id and type only, and the
other middleware's after hooks still close what they opened."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from edbus import Bus
from edbus.backends import Record, open_backend
from edbus.bus.metrics import Metrics
from edbus.bus.middleware import Middleware
from edbus.bus.retries import Retries
from edbus.bus.tracing import Tracing
from tests.events import CATALOG_CHANGED, course


class PolicyRefused(Exception):
    pass


class RefuseHidden(Middleware):
    """A policy middleware: refuses any batch holding an event whose payload names a secret course."""

    def before_publish(self, topic: str, records: Sequence[Record]) -> Sequence[Record]:
        if any(b"Secret" in r.payload for r in records):
            raise PolicyRefused("this course may not leave the service")
        return records


class Broken(Middleware):
    """A middleware with a bug: it cannot vet anything."""

    def before_publish(self, topic: str, records: Sequence[Record]) -> Sequence[Record]:
        raise AttributeError("'NoneType' object has no attribute 'allowed'")


def _stored(url: str, topic: str) -> list[str]:
    with Bus.from_url(url) as reader:
        return [m.record.id for m, _, _ in reader.read(topic)] if any(
            t.topic == topic for t in reader.topics()) else []


@pytest.mark.parametrize("method", ["publish", "publish_many", "publish_encoded"])
def test_a_raising_before_publish_stores_nothing_and_the_caller_gets_its_error(url: str, method: str) -> None:
    metrics = Metrics()
    with Bus.from_url(url, middleware=[Tracing(), metrics, RefuseHidden(), Retries()]) as bus:
        ok = bus.publish("catalog", CATALOG_CHANGED, course(1))
        with pytest.raises(PolicyRefused):
            if method == "publish":
                bus.publish("catalog", CATALOG_CHANGED, course(2, "Secret course"))
            elif method == "publish_many":
                bus.publish_many("catalog", [(CATALOG_CHANGED, course(3)), (CATALOG_CHANGED, course(4, "Secret"))])
            else:
                bus.publish_encoded("catalog", [bus.codec.encode(bus.topic("catalog"), CATALOG_CHANGED,
                                                                 course(5, "Secret"))])
        # the after hooks saw the refusal: counted as failed, not published
        counted = metrics.snapshot()
        assert counted["published"] == 1 and counted["publish_failed"] >= 1
    assert _stored(url, bus.topic("catalog")) == [ok]


def test_a_middleware_bug_in_before_publish_fails_closed_and_logs_ids_and_types_not_payloads(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    with Bus.from_url(url, middleware=[Broken()]) as bus, caplog.at_level(logging.ERROR, "edbus.middleware"):
        with pytest.raises(AttributeError):
            bus.publish("catalog", CATALOG_CHANGED, course(7, "Learner Alice Example"), id="ev-7")
        topic = bus.topic("catalog")
    assert _stored(url, topic) == []
    (line,) = [r.getMessage() for r in caplog.records]
    assert "Broken.before_publish refused 1 event(s)" in line and "ev-7" in line and CATALOG_CHANGED.name in line
    assert "Alice" not in line and "course-v1:edX+C7" not in line


def test_without_a_refusal_the_same_chain_publishes(url: str) -> None:
    backend = open_backend(url)
    with Bus(backend, middleware=[RefuseHidden()]) as bus:
        ids = bus.publish_many("catalog", [(CATALOG_CHANGED, course(i)) for i in range(3)])
        topic = bus.topic("catalog")
    assert _stored(url, topic) == ids
