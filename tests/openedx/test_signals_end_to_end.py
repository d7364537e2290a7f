"""Two Django services in separate processes with separate databases: every signal openedx-events can
serialize, sent by the producing service with ``send_event``, reaches the consuming service's receivers
through ``consume_events`` as the same signal with equal data and metadata, on each backend (the embedded
store and Pulsar: ``EDBUS_URL`` of both services)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, eventually
from tests.openedx.services import CONSUMING, GROUP, PRODUCING, TOPIC, Services, stop
from tests.openedx.signal_data import serializable_signals

pytestmark = pytest.mark.slow


def _by_id(rows: list[dict[str, object]]) -> dict[object, tuple[object, object, object]]:
    return {r["event_id"]: (r["event_type"], r["metadata"], r["data"]) for r in rows}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("extra", [None, {"mode": "shared", "concurrency": 4}], ids=["default", "shared-4-threads"])
def test_every_serializable_signal_arrives_as_the_same_signal_with_equal_data_and_metadata(
        tmp_path: Path, extra: dict[str, object] | None, backend: str) -> None:
    services = Services(tmp_path, backend=backend)
    consumer = services.start_consumer(extra)
    services.manage(PRODUCING, "send_all_signals", "--rounds", "3")
    sent = services.sent()
    assert len(sent) == 3 * len(serializable_signals()) >= 180
    assert {r["event_type"] for r in sent} == {s.event_type for s in serializable_signals()}

    eventually(lambda: len(services.received()) >= len(sent), timeout=60)
    code, err = stop(consumer)
    assert code == 0, err[-2000:]
    received = services.received()
    assert _by_id(received) == _by_id(sent)
    assert len(received) == len(sent)  # each exactly once
    assert all(r["from_event_bus"] for r in received)  # re-emitted by the bus: not sent back to it


@pytest.mark.parametrize("backend", BACKENDS)
def test_replay_commands_deliver_a_group_s_events_again(tmp_path: Path, backend: str) -> None:
    services = Services(tmp_path, backend=backend)
    before = dt.datetime.now(dt.UTC).isoformat()
    services.manage(PRODUCING, "send_all_signals")
    count = len(services.sent())
    services.manage(CONSUMING, "consume_events", "-t", TOPIC, "-g", GROUP, "--extra", '{"idle_timeout": 0.3}')
    assert len(services.received()) == count

    services.manage(CONSUMING, "edbus_replay", "-t", TOPIC, "-g", GROUP, "--to", "earliest")
    services.manage(CONSUMING, "consume_events", "-t", TOPIC, "-g", GROUP, "--extra", '{"idle_timeout": 0.3}')
    assert len(services.received()) == 2 * count

    # offset_time in --extra (as the Kafka consumer's): the cursor moves there before consuming
    services.manage(CONSUMING, "consume_events", "-t", TOPIC, "-g", GROUP, "--extra",
                    f'{{"offset_time": "{before}", "idle_timeout": 0.3}}')
    assert len(services.received()) == 3 * count


@pytest.mark.parametrize("backend", BACKENDS)
def test_produce_event_command_sends_one_event_that_the_consumer_receives(tmp_path: Path, backend: str) -> None:
    services = Services(tmp_path, backend=backend)
    done = services.manage(
        PRODUCING, "produce_event", "--signal", "openedx_events.learning.signals.SESSION_LOGIN_COMPLETED",
        "--topic", TOPIC, "--key-field", "user.pii.username", "--data",
        '{"user": {"id": 123, "is_active": true, "pii": {"username": "bob", "email": "bob@example.com", '
        '"name": "Bob Foo"}}}')
    event_id = done.stdout.strip()
    services.manage(CONSUMING, "consume_events", "-t", TOPIC, "-g", GROUP, "--extra", '{"idle_timeout": 0.3}')
    (row,) = services.received()
    assert row["event_id"] == event_id
    assert row["event_type"] == "org.openedx.learning.auth.session.login.completed.v1"
    assert '"username": "bob"' in str(row["data"])
