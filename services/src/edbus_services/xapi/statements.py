"""openedx-events learning events → xAPI 1.0.3 statements.

The input is what an edbus consumer's fallback handler receives for an event produced by
``edbus.openedx``: the signal's data as plain Avro dicts (openedx-events' own schema), so the feed needs
neither Django nor openedx-events at run time. Verbs and activity types follow the ADL and TinCan
registries as Open edX's event-routing-backends uses them.

Statement ids are deterministic: a uuid5 of (actor, verb, object, timestamp). A redelivered event gives
the same statement with the same id, so sending it again is idempotent at the LRS.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from edbus import __version__
from edbus.errors import ConfigError

__all__ = ["EVENT_TYPES", "STATEMENT_NAMESPACE", "XapiConfig", "statement_id", "timestamp", "to_statement"]

# the namespace of every statement and Caliper event id this feed makes (fixed: ids must never change)
STATEMENT_NAMESPACE = uuid.UUID("6c1e4d2a-9f0b-5c37-8e55-0b5e1d9a7c41")

ENROLLMENT_CREATED = "org.openedx.learning.course.enrollment.created.v1"
ENROLLMENT_CHANGED = "org.openedx.learning.course.enrollment.changed.v1"
UNENROLLMENT_COMPLETED = "org.openedx.learning.course.unenrollment.completed.v1"
PASSING_STATUS_UPDATED = "org.openedx.learning.course.passing.status.updated.v1"
CCX_PASSING_STATUS_UPDATED = "org.openedx.learning.ccx.course.passing.status.updated.v1"
CERTIFICATE_CREATED = "org.openedx.learning.certificate.created.v1"
GRADE_SUMMARY_CHANGED = "org.openedx.learning.course.persistent_grade_summary.changed.v1"
EXTERNAL_GRADER_SCORE_SUBMITTED = "org.openedx.learning.external_grader.score.submitted.v1"

VERB_REGISTERED = "http://adlnet.gov/expapi/verbs/registered"
VERB_UNREGISTERED = "http://id.tincanapi.com/verb/unregistered"
VERB_PASSED = "http://adlnet.gov/expapi/verbs/passed"
VERB_FAILED = "http://adlnet.gov/expapi/verbs/failed"
VERB_EARNED = "http://id.tincanapi.com/verb/earned"
VERB_SCORED = "http://adlnet.gov/expapi/verbs/scored"

COURSE_TYPE = "http://adlnet.gov/expapi/activities/course"
CERTIFICATE_TYPE = "https://www.opigno.org/en/tincan_registry/activity_type/certificate"
PROBLEM_TYPE = "http://adlnet.gov/expapi/activities/cmi.interaction"
EXT_MODE = "https://w3id.org/xapi/acrossx/extensions/type"
EXT_TRANSFORMER = "https://w3id.org/xapi/openedx/extension/transformer-version"
EXT_EVENT_TYPE = "https://w3id.org/xapi/openedx/extensions/event-type"  # which openedx-events signal it was
EXT_LETTER_GRADE = "https://w3id.org/xapi/openedx/extensions/letter-grade"
EXT_CERTIFICATE = "https://w3id.org/xapi/openedx/extensions/certificate"


@dataclasses.dataclass(frozen=True, slots=True)
class XapiConfig:
    """``lms_url``: the LMS root URL (``LMS_ROOT_URL``), the base of actor home pages and activity ids.
    Actors are ``account`` agents named by the numeric user id, never by username or email (no PII)."""

    lms_url: str = "https://lms.example.com"
    platform: str = "Open edX"
    language: str = "en-US"

    def __post_init__(self) -> None:
        if not self.lms_url.startswith(("http://", "https://")):
            raise ConfigError(f"lms_url must be an http(s) URL, not {self.lms_url!r}")
        object.__setattr__(self, "lms_url", self.lms_url.rstrip("/"))


def timestamp(time: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z`` (both xAPI and Caliper accept it)."""
    if time.tzinfo is None:
        time = time.replace(tzinfo=dt.UTC)
    return time.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def statement_id(actor: Mapping[str, Any], verb: str, object_id: str, when: str) -> str:
    """uuid5 of actor, verb, object and time: the same fact always gets the same id."""
    name = json.dumps([actor, verb, object_id, when], sort_keys=True, separators=(",", ":"))
    return str(uuid.uuid5(STATEMENT_NAMESPACE, name))


def _actor(config: XapiConfig, user_id: object) -> dict[str, Any]:
    return {"objectType": "Agent", "account": {"homePage": config.lms_url, "name": str(user_id)}}


def _verb(config: XapiConfig, verb: str) -> dict[str, Any]:
    return {"id": verb, "display": {config.language: verb.rsplit("/", 1)[-1]}}


def _course(config: XapiConfig, course_key: str, display_name: str | None) -> dict[str, Any]:
    definition: dict[str, Any] = {"type": COURSE_TYPE}
    if display_name:
        definition["name"] = {config.language: display_name}
    return {"objectType": "Activity", "id": f"{config.lms_url}/course/{course_key}", "definition": definition}


def _statement(config: XapiConfig, event_type: str, time: dt.datetime, user_id: object, verb: str,
               obj: dict[str, Any], *, result: dict[str, Any] | None = None,
               extensions: Mapping[str, Any] | None = None,
               parent: dict[str, Any] | None = None) -> dict[str, Any]:
    actor = _actor(config, user_id)
    when = timestamp(time)
    context: dict[str, Any] = {
        "platform": config.platform,
        "extensions": {EXT_TRANSFORMER: f"edbus@{__version__}", EXT_EVENT_TYPE: event_type,
                       **(extensions or {})},
    }
    if parent is not None:
        context["contextActivities"] = {"parent": [parent]}
    statement: dict[str, Any] = {
        "id": statement_id(actor, verb, obj["id"], when),
        "actor": actor,
        "verb": _verb(config, verb),
        "object": obj,
        "context": context,
        "timestamp": when,
    }
    if result is not None:
        statement["result"] = result
    return statement


def _enrollment(config: XapiConfig, event_type: str, data: Mapping[str, Any], time: dt.datetime) -> dict[str, Any]:
    enrollment = data["enrollment"]
    active = enrollment["is_active"] and event_type != UNENROLLMENT_COMPLETED
    course = enrollment["course"]
    return _statement(config, event_type, time, enrollment["user"]["id"],
                      VERB_REGISTERED if active else VERB_UNREGISTERED,
                      _course(config, course["course_key"], course.get("display_name")),
                      extensions={EXT_MODE: enrollment["mode"]})


def _passing(config: XapiConfig, event_type: str, data: Mapping[str, Any], time: dt.datetime) -> dict[str, Any]:
    status = data["course_passing_status"]
    course = status["course"]
    passing = bool(status["is_passing"])
    parent = None
    if "ccx_course_key" in course:  # a CCX: the activity is the CCX, its master course the parent
        obj = _course(config, course["ccx_course_key"], course.get("display_name"))
        parent = _course(config, course["master_course_key"], None)
    else:
        obj = _course(config, course["course_key"], course.get("display_name"))
    return _statement(config, event_type, time, status["user"]["id"], VERB_PASSED if passing else VERB_FAILED,
                      obj, result={"success": passing}, parent=parent)


def _certificate(config: XapiConfig, event_type: str, data: Mapping[str, Any], time: dt.datetime) -> dict[str, Any]:
    cert = data["certificate"]
    user_id, course = cert["user"]["id"], cert["course"]
    obj = {"objectType": "Activity",
           "id": f"{config.lms_url}/certificates/user/{user_id}/course/{course['course_key']}",
           "definition": {"type": CERTIFICATE_TYPE,
                          "name": {config.language: f"Certificate: {course['display_name']}"}}}
    details = {"mode": cert["mode"], "grade": cert["grade"], "status": cert["current_status"],
               "download_url": cert["download_url"]}
    return _statement(config, event_type, time, user_id, VERB_EARNED, obj,
                      extensions={EXT_CERTIFICATE: details},
                      parent=_course(config, course["course_key"], course.get("display_name")))


def _grade(config: XapiConfig, event_type: str, data: Mapping[str, Any], time: dt.datetime) -> dict[str, Any]:
    grade = data["grade"]
    course = grade["course"]
    # percent_grade is 0..1 in edx-platform: the scaled score as is (an out-of-range value is bad input
    # that the LRS refuses, so it ends in the dead-letter topic instead of being silently clamped)
    result = {"score": {"scaled": grade["percent_grade"]}}
    extensions = {EXT_LETTER_GRADE: grade["letter_grade"]} if grade.get("letter_grade") else {}
    return _statement(config, event_type, time, grade["user_id"], VERB_EARNED,
                      _course(config, course["course_key"], course.get("display_name")),
                      result=result, extensions=extensions)


def _external_score(config: XapiConfig, event_type: str, data: Mapping[str, Any],
                    time: dt.datetime) -> dict[str, Any]:
    score = data["score"]
    earned, possible = score["points_earned"], score["points_possible"]
    result: dict[str, Any] = {"score": {"raw": earned, "min": 0, "max": possible}}
    if possible > 0:
        result["score"]["scaled"] = earned / possible
    obj = {"objectType": "Activity", "id": f"{config.lms_url}/xblock/{score['module_id']}",
           "definition": {"type": PROBLEM_TYPE}}
    return _statement(config, event_type, time, score["user_id"], VERB_SCORED, obj, result=result,
                      parent=_course(config, score["course_id"], None))


_TRANSFORMS: dict[str, Callable[[XapiConfig, str, Mapping[str, Any], dt.datetime], dict[str, Any]]] = {
    ENROLLMENT_CREATED: _enrollment,
    ENROLLMENT_CHANGED: _enrollment,
    UNENROLLMENT_COMPLETED: _enrollment,
    PASSING_STATUS_UPDATED: _passing,
    CCX_PASSING_STATUS_UPDATED: _passing,
    CERTIFICATE_CREATED: _certificate,
    GRADE_SUMMARY_CHANGED: _grade,
    EXTERNAL_GRADER_SCORE_SUBMITTED: _external_score,
}

EVENT_TYPES: frozenset[str] = frozenset(_TRANSFORMS)


def to_statement(config: XapiConfig, event_type: str, data: Mapping[str, Any],
                 time: dt.datetime) -> dict[str, Any] | None:
    """The xAPI statement of one event (its openedx-events type, Avro data and CloudEvents time); None for
    an event type the feed does not map. ``KeyError``/``TypeError`` for data that lacks a field."""
    transform = _TRANSFORMS.get(event_type)
    return None if transform is None else transform(config, event_type, data, time)
