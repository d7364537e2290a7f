"""The xAPI feed against a real LRS (Ralph 5.1.0, scripts/ralph.sh): what Ralph stores is exactly the
expected statements, valid, each once — also after a consumer is SIGKILLed between the LRS's answer and
the acknowledgement; a statement the LRS refuses is dead-lettered with the LRS's answer; an LRS outage is
retried until the LRS is back. The events are openedx-events signals as edbus.openedx produces them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from edbus import Backoff, Bus
from edbus_services.xapi import (
    CaliperFileSink,
    FeedOptions,
    XapiConfig,
    XapiFeed,
    caliper_envelope_problems,
    statement_problems,
    to_caliper,
    to_statement,
)
from tests.conftest import backend_url, eventually
from tests.services.conftest import KEY_FIELDS, T0, TOPICS, Ralph, publish_signal, signal_data

LRS_FIELDS = ("stored", "authority")  # what the LRS adds to a statement


Sent = list[tuple[str, dict[str, Any], dt.datetime]]  # (signal name, signal data, event time)


def publish(bus: Bus, events: Sent) -> list[str]:
    return [publish_signal(bus, name, data, time) for name, data, time in events]


def expected_statements(lms_url: str, events: Sent) -> dict[str, dict[str, Any]]:
    """What the feed should store for ``events``: their data as openedx-events serializes it (the Avro dict
    a consumer decodes), through the mapping. Not read back from the bus: pulsar-client 3.5.0 sometimes
    crashes creating a reader (see the report); tests/services/test_xapi_statements.py reads back from a store."""
    from openedx_events.event_bus.avro.serializer import AvroSignalSerializer
    from openedx_events.learning import signals

    config = XapiConfig(lms_url=lms_url)
    expected = {}
    for name, data, time in events:
        signal = getattr(signals, name)
        statement = to_statement(config, signal.event_type, AvroSignalSerializer(signal).to_dict(data), time)
        if statement is not None:
            expected[statement["id"]] = statement
    return expected


def as_sent(stored: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_id = {s["id"]: {k: v for k, v in s.items() if k not in LRS_FIELDS} for s in stored}
    assert len(by_id) == len(stored), "a statement id is stored twice"
    return by_id


def dead_letters(bus: Bus, topic: str, subscription: str = "xapi-feed") -> list[dict[str, str]]:
    return [m.record.headers for m, _, _ in bus.read(f"{topic}.{subscription}.dlq")]


@pytest.mark.parametrize("kind", ["sqlite", "pulsar"])
def test_every_event_is_stored_once_as_the_expected_statement(kind: str, tmp_path: Path, ralph: Ralph,
                                                               lms_url: str) -> None:
    url = backend_url(kind, tmp_path)
    events = [(name, signal_data(name, n), T0 + dt.timedelta(minutes=n, seconds=i))
              for i, name in enumerate(KEY_FIELDS) for n in range(1, 16)]
    with Bus.from_url(url) as bus:
        publish(bus, events)
        # an event of a type the feed does not map, on one of its topics: acked, no statement
        publish_signal(bus, "CERTIFICATE_REVOKED", signal_data("CERTIFICATE_CREATED", 1), T0,
                       topic=TOPICS["CERTIFICATE_CREATED"], key_field=KEY_FIELDS["CERTIFICATE_CREATED"])
    expected = expected_statements(lms_url, events)
    published = len(events)
    assert len(expected) == published == 120

    caliper_file = tmp_path / "caliper.jsonl"
    xapi = XapiConfig(lms_url=lms_url)
    with XapiFeed(url, ralph.lrs, options=FeedOptions(batch_size=25), xapi=xapi,
                  caliper_sink=CaliperFileSink(caliper_file, xapi)) as feed:
        report = feed.run(idle_timeout=1.5)
    assert report.events == published + 1

    stored = ralph.statements(lms_url)
    assert as_sent(stored) == expected
    assert len(ralph.stored_lines(lms_url)) == len(expected)  # written once each, not only returned once
    for statement in stored:
        assert statement_problems(statement) == [], statement
    assert report.batches < len(expected)  # they went in batches

    envelopes = [json.loads(line) for line in caliper_file.read_text().splitlines()]
    for envelope in envelopes:
        assert caliper_envelope_problems(envelope) == []
    caliper_ids = sorted(e["id"] for envelope in envelopes for e in envelope["data"])
    assert caliper_ids == sorted(to_caliper(xapi, s)["id"] for s in expected.values())


CRASHING_FEED = """
import os, signal, sys
from edbus_services.xapi import FeedOptions, LrsConfig, XapiConfig, XapiFeed

def crash_after_a_stored_batch(statements, outcomes):
    if all(outcome is None for outcome in outcomes):  # Ralph stored them; nothing is acked yet
        print(len(statements), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

url, endpoint, user, password, lms_url, topic = sys.argv[1:]
options = FeedOptions(topics=(topic,), batch_size=10, linger=0.5, lease=2.0)
XapiFeed(url, LrsConfig(endpoint, user, password), options=options, xapi=XapiConfig(lms_url=lms_url),
         after_send=crash_after_a_stored_batch).run(idle_timeout=30)
"""


@pytest.mark.parametrize("kind", ["sqlite", "pulsar"])
def test_a_consumer_killed_between_the_lrs_answer_and_the_ack_stores_nothing_twice(
        kind: str, tmp_path: Path, ralph: Ralph, lms_url: str) -> None:
    url, topic = backend_url(kind, tmp_path), TOPICS["COURSE_ENROLLMENT_CREATED"]
    events = [("COURSE_ENROLLMENT_CREATED", signal_data("COURSE_ENROLLMENT_CREATED", n), T0 + dt.timedelta(seconds=n))
              for n in range(1, 41)]
    with Bus.from_url(url) as bus:
        publish(bus, events)
    expected = expected_statements(lms_url, events)

    lrs = ralph.lrs
    crashed = subprocess.run([sys.executable, "-c", CRASHING_FEED, url, lrs.endpoint, lrs.username, lrs.password,
                              lms_url, topic], capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -9, crashed.stderr
    first_batch = int(crashed.stdout)
    assert 0 < first_batch < len(expected)
    assert len(ralph.statements(lms_url)) == first_batch
    with Bus.from_url(url) as bus:
        (stats,) = bus.backend.subscriptions(bus.topic(topic))
        assert stats.backlog == len(expected)  # stored at the LRS, but not one acked

    options = FeedOptions(topics=(topic,), batch_size=10, lease=2.0)
    with XapiFeed(url, ralph.lrs, options=options, xapi=XapiConfig(lms_url=lms_url)) as feed:
        report = feed.run(idle_timeout=4.0)  # longer than the dead consumer's leases
    assert report.events == len(expected)
    assert report.statements == len(expected)  # the crashed batch was sent again...
    assert as_sent(ralph.statements(lms_url)) == expected  # ...and is stored once
    assert len(ralph.stored_lines(lms_url)) == len(expected)


def test_a_statement_the_lrs_refuses_is_dead_lettered_at_once_with_the_lrs_answer(
        tmp_path: Path, ralph: Ralph, lms_url: str) -> None:
    url, topic = backend_url("sqlite", tmp_path), TOPICS["EXTERNAL_GRADER_SCORE_SUBMITTED"]
    events: Sent = [("PERSISTENT_GRADE_SUMMARY_CHANGED", signal_data("PERSISTENT_GRADE_SUMMARY_CHANGED", n),
                     T0 + dt.timedelta(seconds=n)) for n in range(1, 6)]
    # a score for a submission with no learner id: its statement's actor has an empty account name
    events.append(("EXTERNAL_GRADER_SCORE_SUBMITTED", signal_data("EXTERNAL_GRADER_SCORE_SUBMITTED", 9, user_id=""),
                   T0))
    with Bus.from_url(url) as bus:
        bad_id = publish(bus, events)[-1]
    expected = expected_statements(lms_url, events)
    bad = [s for s in expected.values() if s["actor"]["account"]["name"] == ""]
    assert len(bad) == 1 and statement_problems(bad[0])
    good = {k: v for k, v in expected.items() if v is not bad[0]}

    options = FeedOptions(topics=(topic,), batch_size=10, linger=0.3)  # all six in one batch
    with XapiFeed(url, ralph.lrs, options=options, xapi=XapiConfig(lms_url=lms_url)) as feed:
        report = feed.run(idle_timeout=1.5)
    assert report.events == 6
    assert as_sent(ralph.statements(lms_url)) == good  # the rest of the refused batch is stored
    with Bus.from_url(url) as bus:
        (letter,) = dead_letters(bus, topic)
    assert letter["ce_id"] == bad_id
    assert letter["edbus_dlq_error_type"] == "edbus_services.xapi.errors.LrsRejectedError"
    assert letter["edbus_dlq_attempts"] == "1"  # not retried: it can never succeed
    message = letter["edbus_dlq_error_message"]
    assert f"refused statement {bad[0]['id']}: HTTP 422" in message
    assert '"loc":["body","actor"' in message  # Ralph's own answer, naming the field


def test_an_lrs_outage_is_retried_until_the_lrs_is_back(tmp_path: Path, own_ralph: Ralph, lms_url: str) -> None:
    url, topic = backend_url("sqlite", tmp_path), TOPICS["CERTIFICATE_CREATED"]
    own_ralph.stop()
    events = [("CERTIFICATE_CREATED", signal_data("CERTIFICATE_CREATED", n), T0) for n in range(1, 21)]
    with Bus.from_url(url) as bus:
        publish(bus, events)
    expected = expected_statements(lms_url, events)

    options = FeedOptions(topics=(topic,), batch_size=10, max_attempts=1000, backoff=Backoff(base=0.2, maximum=1.0))
    feed = XapiFeed(url, own_ralph.lrs, options=options, xapi=XapiConfig(lms_url=lms_url))
    runner = threading.Thread(target=feed.run)
    runner.start()
    try:
        eventually(lambda: feed.metrics.snapshot().get("retried", 0) >= 2 * len(expected), timeout=60)
        own_ralph.start()
        eventually(lambda: len(own_ralph.statements(lms_url)) == len(expected), timeout=60, interval=0.2)
        eventually(lambda: feed.metrics.snapshot().get("acked", 0) == len(expected), timeout=30)
    finally:
        feed.stop()
        runner.join(60)
        feed.close()
    assert as_sent(own_ralph.statements(lms_url)) == expected
    assert len(own_ralph.stored_lines(lms_url)) == len(expected)
    with Bus.from_url(url) as bus:
        assert dead_letters(bus, topic) == []


def test_a_409_for_a_statement_id_already_stored_counts_as_success(tmp_path: Path, ralph: Ralph,
                                                                   lms_url: str) -> None:
    url, topic = backend_url("sqlite", tmp_path), TOPICS["COURSE_ENROLLMENT_CREATED"]
    with Bus.from_url(url) as bus:
        # created, then changed, for one learner at one instant: the same fact (registered) and so the same
        # statement id, but not the same statement (the event type is in its context): Ralph answers 409
        for name in ("COURSE_ENROLLMENT_CREATED", "COURSE_ENROLLMENT_CHANGED"):
            publish_signal(bus, name, signal_data(name, 5), T0)
        first, second = [to_statement(XapiConfig(lms_url=lms_url), m.record.type, data, envelope.time)
                         for m, envelope, data in bus.read(topic)]
    assert first and second and first["id"] == second["id"] and first != second

    options = FeedOptions(topics=(topic,), batch_size=1)  # one PUT each, in order
    with XapiFeed(url, ralph.lrs, options=options, xapi=XapiConfig(lms_url=lms_url)) as feed:
        report = feed.run(idle_timeout=1.0)
    assert report.events == 2 and feed.metrics.snapshot().get("acked") == 2
    assert as_sent(ralph.statements(lms_url)) == {first["id"]: first}
    with Bus.from_url(url) as bus:
        assert dead_letters(bus, topic) == []


def test_the_command_feeds_until_sigterm_then_exits_0(tmp_path: Path, ralph: Ralph, lms_url: str) -> None:
    import os
    import signal

    url, topic = backend_url("sqlite", tmp_path), TOPICS["COURSE_PASSING_STATUS_UPDATED"]
    with Bus.from_url(url) as bus:
        for n in range(1, 11):
            publish_signal(bus, "COURSE_PASSING_STATUS_UPDATED", signal_data("COURSE_PASSING_STATUS_UPDATED", n),
                           T0 + dt.timedelta(seconds=n))
    lrs = ralph.lrs
    env = {**os.environ, "EDBUS_LRS_PASSWORD": lrs.password}
    feed = subprocess.Popen([sys.executable, "-m", "edbus_services.xapi", "--url", url, "--lrs", lrs.endpoint,
                             "--lrs-user", lrs.username, "--lms-url", lms_url, "--topic", topic,
                             "--caliper-file", str(tmp_path / "caliper.jsonl")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: len(ralph.statements(lms_url)) == 10, timeout=60, interval=0.2)
        feed.send_signal(signal.SIGTERM)
        out, err = feed.communicate(timeout=60)
    finally:
        feed.kill()
    assert feed.returncode == 0, err
    assert "10 event(s), 10 statement(s)" in out
    assert len(ralph.stored_lines(lms_url)) == 10


def test_an_event_whose_data_does_not_fit_the_mapping_is_dead_lettered_at_once(tmp_path: Path,
                                                                              lms_url: str) -> None:
    """A producer that reuses a learning event type's name with another schema: no statement can be made."""
    import dataclasses as dc

    from edbus import EventType
    from edbus_services.xapi import LrsConfig

    @dc.dataclass(frozen=True)
    class NotAnEnrollment:
        enrollment: str

    impostor = EventType("org.openedx.learning.course.enrollment.created.v1", NotAnEnrollment, key="enrollment")
    url, topic = backend_url("sqlite", tmp_path), TOPICS["COURSE_ENROLLMENT_CREATED"]
    with Bus.from_url(url) as bus:
        event_id = bus.publish(topic, impostor, NotAnEnrollment("learner 1 in DemoX"))
    nowhere = LrsConfig("http://127.0.0.1:9/xAPI/", "user", "password")  # never contacted
    with XapiFeed(url, nowhere, options=FeedOptions(topics=(topic,)), xapi=XapiConfig(lms_url=lms_url)) as feed:
        report = feed.run(idle_timeout=0.5)
    assert report.events == 1 and report.statements == 0
    with Bus.from_url(url) as bus:
        (letter,) = dead_letters(bus, topic)
    assert letter["ce_id"] == event_id and letter["edbus_dlq_attempts"] == "1"
    assert letter["edbus_dlq_error_type"] == "edbus_services.xapi.errors.UntransformableEventError"
    assert "does not fit the xAPI mapping" in letter["edbus_dlq_error_message"]
