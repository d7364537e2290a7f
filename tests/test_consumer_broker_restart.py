"""A real Pulsar outage: the consumer's broker stopped and started again (a broker of the test's own).

The consumer meets the outage where it used to end: subscribing, and opening the attempt ledger of a new
consumer, while the broker is down. It pauses, retries with backoff, and once the broker is back handles
every event; a second outage while it runs is waited out the same way."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from edbus import Bus, Event
from edbus.backends import Mode, StartAt
from edbus.bus.consumer import StoreRetry
from tests.conftest import eventually
from tests.events import SEQ, Seq
from tests.faults.faults import PulsarBroker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulsarBroker]:
    try:
        import pulsar  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs pulsar-client: {exc}")
        pytest.skip(f"pulsar-client is not installed ({exc})")
    broker = PulsarBroker(tmp_path_factory.mktemp("broker"))  # a broker that cannot start fails the test
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_a_consumer_meeting_a_stopped_broker_pauses_and_handles_everything_once_it_is_back(
        own_broker: PulsarBroker) -> None:
    url = own_broker.url("restart-", publish_timeout=180)
    producing, consuming = Bus.from_url(url), Bus.from_url(url)
    handled: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    consumer = consuming.consumer("t", "s", lease=10.0)
    consumer.store_retry = StoreRetry(first=0.2, maximum=2.0, give_up_after=10.0)

    @consumer.handler(SEQ)
    def record(event: Event[Seq]) -> None:
        with lock:
            handled.append(event.data.n)

    def consume() -> None:
        try:
            consumer.run(install_signals=False)
        except BaseException as exc:
            errors.append(exc)

    def count() -> int:
        with lock:
            return len(set(handled))

    producing.backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
    producing.publish_many("t", [(SEQ, Seq(f"k{i % 5}", i)) for i in range(50)])
    own_broker.stop()
    runner = threading.Thread(target=consume)
    runner.start()
    try:
        # 1. started while the broker is down: subscribing fails, the run goes on
        eventually(lambda: consumer.health.store_error or errors, timeout=60)
        assert errors == [] and runner.is_alive()
        assert consumer.health.alive()[0] and not consumer.health.ready()[0]
        own_broker.start()
        eventually(lambda: count() >= 50 or errors, timeout=120, interval=0.05)
        assert errors == []
        # 2. stopped again while the consumer runs (its client reconnects by itself; a call that fails meanwhile
        # pauses the loop): a publish waits for the broker, the consumer handles it once the broker is back
        own_broker.stop()
        publishing = threading.Thread(target=lambda: producing.publish_many(
            "t", [(SEQ, Seq(f"k{i % 5}", i)) for i in range(50, 80)]))
        publishing.start()
        own_broker.start()
        publishing.join(180)
        assert not publishing.is_alive()
        eventually(lambda: count() >= 80 or errors, timeout=120, interval=0.05)
    finally:
        consumer.stop()
        runner.join(60)
        producing.close()
        consuming.close()
    assert errors == [] and not runner.is_alive()
    assert set(handled) == set(range(80))  # nothing lost (a redelivery after the outage is at least once)
