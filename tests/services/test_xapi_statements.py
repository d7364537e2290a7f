"""The mapping of openedx-events learning events to xAPI 1.0.3 statements and Caliper 1.2 events, on events
produced and stored exactly as edbus.openedx does (openedx-events' serializer, an edbus store, read back as
the feed's consumer gets them). No LRS here: tests/services/test_xapi_feed.py has the real one."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from edbus import Bus
from edbus_services.xapi import (
    CALIPER_CONTEXT,
    EVENT_TYPES,
    XapiConfig,
    caliper_envelope,
    caliper_envelope_problems,
    caliper_event_problems,
    statement_problems,
    to_caliper,
    to_statement,
)
from tests.services.conftest import KEY_FIELDS, T0, publish_signal, signal_data

LMS = "https://lms.example.com"
CONFIG = XapiConfig(lms_url=LMS)
COURSE_ID = f"{LMS}/course/course-v1:edX+DemoX+2024_T1"


def stored_events(tmp_path: Path, events: list[tuple[str, dict[str, Any], dt.datetime]]) -> list[tuple[str, Any, Any]]:
    """Publish through the openedx producer's codec; read back (type, Avro data, envelope time) as the feed
    gets them."""
    with Bus.from_url(f"sqlite:///{tmp_path}/bus.db") as bus:
        for name, data, time in events:
            publish_signal(bus, name, data, time, topic="learning")
        return [(m.record.type, data, envelope.time) for m, envelope, data in bus.read("learning")]


def test_every_mapped_signal_exists_in_openedx_events_and_gives_a_valid_statement_and_caliper_event(
        tmp_path: Path) -> None:
    from openedx_events.learning import signals

    assert {getattr(signals, name).event_type for name in KEY_FIELDS} == EVENT_TYPES
    events = [(name, signal_data(name, n), T0 + dt.timedelta(seconds=n)) for n, name in enumerate(KEY_FIELDS, 1)]
    caliper = []
    for event_type, data, time in stored_events(tmp_path, events):
        statement = to_statement(CONFIG, event_type, data, time)
        assert statement is not None, event_type
        assert statement_problems(statement) == [], (event_type, statement)
        event = to_caliper(CONFIG, statement)
        assert caliper_event_problems(event) == [], (event_type, event)
        caliper.append(event)
    assert caliper_envelope_problems(caliper_envelope(CONFIG, caliper)) == []
    assert len({e["id"] for e in caliper}) == len(caliper)


def test_an_enrollment_gives_exactly_this_statement(tmp_path: Path) -> None:
    ((event_type, data, time),) = stored_events(tmp_path, [("COURSE_ENROLLMENT_CREATED", signal_data(
        "COURSE_ENROLLMENT_CREATED", 7), T0)])
    statement = to_statement(CONFIG, event_type, data, time)
    actor = {"objectType": "Agent", "account": {"homePage": LMS, "name": "7"}}
    assert statement == {
        "id": statement["id"] if statement else None,
        "actor": actor,
        "verb": {"id": "http://adlnet.gov/expapi/verbs/registered", "display": {"en-US": "registered"}},
        "object": {"objectType": "Activity", "id": COURSE_ID,
                   "definition": {"type": "http://adlnet.gov/expapi/activities/course",
                                  "name": {"en-US": "Demo course"}}},
        "context": {"platform": "Open edX", "extensions": {
            "https://w3id.org/xapi/openedx/extension/transformer-version": "edbus@0.1.0",
            "https://w3id.org/xapi/openedx/extensions/event-type": "org.openedx.learning.course.enrollment.created.v1",
            "https://w3id.org/xapi/acrossx/extensions/type": "verified"}},
        "timestamp": "2024-03-01T12:00:00.250Z",
    }
    assert statement is not None
    # the id is the uuid5 of actor, verb, object and time: recomputed here from its definition
    import json
    name = json.dumps([actor, "http://adlnet.gov/expapi/verbs/registered", COURSE_ID, "2024-03-01T12:00:00.250Z"],
                      sort_keys=True, separators=(",", ":"))
    assert statement["id"] == str(uuid.uuid5(uuid.UUID("6c1e4d2a-9f0b-5c37-8e55-0b5e1d9a7c41"), name))


@pytest.mark.parametrize(("name", "overrides", "verb", "result"), [
    ("COURSE_ENROLLMENT_CHANGED", {"is_active": False}, "http://id.tincanapi.com/verb/unregistered", None),
    ("COURSE_ENROLLMENT_CHANGED", {"mode": "audit"}, "http://adlnet.gov/expapi/verbs/registered", None),
    ("COURSE_UNENROLLMENT_COMPLETED", {}, "http://id.tincanapi.com/verb/unregistered", None),
    ("COURSE_PASSING_STATUS_UPDATED", {"is_passing": True}, "http://adlnet.gov/expapi/verbs/passed",
     {"success": True}),
    ("COURSE_PASSING_STATUS_UPDATED", {"is_passing": False}, "http://adlnet.gov/expapi/verbs/failed",
     {"success": False}),
    ("PERSISTENT_GRADE_SUMMARY_CHANGED", {"percent_grade": 0.82}, "http://id.tincanapi.com/verb/earned",
     {"score": {"scaled": 0.82}}),
    ("EXTERNAL_GRADER_SCORE_SUBMITTED", {"points_earned": 4}, "http://adlnet.gov/expapi/verbs/scored",
     {"score": {"raw": 4, "min": 0, "max": 10, "scaled": 0.4}}),
])
def test_verbs_and_results(tmp_path: Path, name: str, overrides: dict[str, Any], verb: str,
                           result: dict[str, Any] | None) -> None:
    ((event_type, data, time),) = stored_events(tmp_path, [(name, signal_data(name, 3, **overrides), T0)])
    statement = to_statement(CONFIG, event_type, data, time)
    assert statement is not None and statement_problems(statement) == []
    assert statement["verb"]["id"] == verb
    assert statement.get("result") == result
    assert statement["actor"]["account"] == {"homePage": LMS, "name": "3"}


def test_a_ccx_statement_names_the_ccx_and_its_master_course(tmp_path: Path) -> None:
    ((event_type, data, time),) = stored_events(tmp_path, [("CCX_COURSE_PASSING_STATUS_UPDATED", signal_data(
        "CCX_COURSE_PASSING_STATUS_UPDATED", 1), T0)])
    statement = to_statement(CONFIG, event_type, data, time)
    assert statement is not None
    assert statement["object"]["id"] == f"{LMS}/course/ccx-v1:edX+DemoX+2024_T1+ccx@2"
    assert statement["context"]["contextActivities"]["parent"][0]["id"] == COURSE_ID


def test_statement_ids_are_deterministic_and_distinguish_facts(tmp_path: Path) -> None:
    name = "COURSE_ENROLLMENT_CREATED"
    events = stored_events(tmp_path, [(name, signal_data(name, 1), T0), (name, signal_data(name, 1), T0),
                                      (name, signal_data(name, 2), T0),
                                      (name, signal_data(name, 1), T0 + dt.timedelta(milliseconds=1))])
    ids = [to_statement(CONFIG, t, d, time)["id"] for t, d, time in events]  # type: ignore[index]
    assert ids[0] == ids[1]  # a redelivered (or re-sent) event: the same statement
    assert len({ids[0], ids[2], ids[3]}) == 3  # another learner, another time: other statements
    assert XapiConfig(lms_url="https://other.example.com") != CONFIG


def test_unmapped_types_give_no_statement_and_mapped_data_must_fit() -> None:
    assert to_statement(CONFIG, "org.openedx.learning.auth.session.login.completed.v1", {}, T0) is None
    with pytest.raises(KeyError):
        to_statement(CONFIG, "org.openedx.learning.course.enrollment.created.v1", {"enrollment": {}}, T0)


def test_the_validators_find_what_breaks_the_specifications() -> None:
    good = {"id": str(uuid.uuid4()), "actor": {"objectType": "Agent", "account": {"homePage": LMS, "name": "1"}},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/passed", "display": {"en-US": "passed"}},
            "object": {"id": COURSE_ID}, "timestamp": "2024-03-01T12:00:00Z"}
    assert statement_problems(good) == []
    broken = {
        "id": {**good, "id": "not-a-uuid"},
        "actor": {**good, "actor": {"objectType": "Agent", "account": {"homePage": LMS, "name": ""}}},
        "actor.mbox": {**good, "actor": {"mbox": "mailto:a@example.com", "account": {"homePage": LMS, "name": "1"}}},
        "verb": {**good, "verb": {"id": "passed"}},
        "object": {**good, "object": {"id": "course-v1 edX"}},
        "result.score.scaled": {**good, "result": {"score": {"scaled": 7.5}}},
        "result.score.raw": {**good, "result": {"score": {"raw": 12, "min": 0, "max": 10}}},
        "timestamp": {**good, "timestamp": "2024-03-01 12:00"},
        "extra": {**good, "grade": 1},
    }
    for what, statement in broken.items():
        assert statement_problems(statement), what

    event = to_caliper(CONFIG, to_statement(CONFIG, "org.openedx.learning.course.passing.status.updated.v1", {
        "course_passing_status": {"is_passing": True, "course": {"course_key": "course-v1:a+b+c", "display_name": "C"},
                                  "user": {"id": 1}}}, T0) or {})
    assert event["@context"] == CALIPER_CONTEXT and caliper_event_problems(event) == []
    for key, value in [("@context", "http://purl.imsglobal.org/ctx/caliper/v1p1"), ("id", str(uuid.uuid4())),
                       ("action", "Viewed"), ("eventTime", "2024-03-01T12:00:00Z"), ("type", "Grade"),
                       ("generated", {"id": "urn:x", "type": "Score", "scoreGiven": 3, "maxScore": 2})]:
        assert caliper_event_problems({**event, key: value}), key
    assert caliper_envelope_problems({"sensor": LMS, "sendTime": "2024-03-01T12:00:00.000Z",
                                      "dataVersion": CALIPER_CONTEXT, "data": []})
