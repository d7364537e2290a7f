"""xAPI statements → IMS Caliper 1.2 events, and the envelope that carries them to a Caliper endpoint.

One mapping (``statements``) decides what an event means; the Caliper event is derived from its xAPI
statement, so the two feeds never disagree. Caliper ids are ``urn:uuid:`` uuid5s of the statement id:
deterministic, like the statement ids.

| xAPI verb | Caliper type / action | object |
|---|---|---|
| registered / unregistered | ``Event`` / ``Activated`` / ``Deactivated`` | ``CourseOffering`` |
| passed / failed, earned (course grade), scored | ``GradeEvent`` / ``Graded`` | ``Attempt``; generated: ``Score`` |
| earned (certificate) | ``Event`` / ``Completed`` | ``CourseOffering`` (the certificate in extensions) |
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from edbus_services.xapi import statements as xs

__all__ = ["CALIPER_CONTEXT", "caliper_envelope", "to_caliper"]

CALIPER_CONTEXT = "http://purl.imsglobal.org/ctx/caliper/v1p2"


def _urn(statement_id: str, part: str) -> str:
    return f"urn:uuid:{uuid.uuid5(xs.STATEMENT_NAMESPACE, f'caliper:{part}:{statement_id}')}"


def _person(config: xs.XapiConfig, statement: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": f"{config.lms_url}/users/{statement['actor']['account']['name']}", "type": "Person"}


def _edapp(config: xs.XapiConfig) -> dict[str, Any]:
    return {"id": config.lms_url, "type": "SoftwareApplication", "name": config.platform}


def _course_of(config: xs.XapiConfig, statement: Mapping[str, Any]) -> dict[str, Any]:
    """The CourseOffering the statement is about: its object, or its parent course activity."""
    obj = statement["object"]
    if obj.get("definition", {}).get("type") != xs.COURSE_TYPE:
        obj = statement["context"]["contextActivities"]["parent"][0]
    entity: dict[str, Any] = {"id": obj["id"], "type": "CourseOffering",
                              "courseNumber": obj["id"].rsplit("/course/", 1)[-1]}
    name = obj.get("definition", {}).get("name", {}).get(config.language)
    if name:
        entity["name"] = name
    return entity


def _score(statement: Mapping[str, Any]) -> tuple[float, float]:
    """(scoreGiven, maxScore) of a graded statement."""
    verb = statement["verb"]["id"]
    result = statement.get("result", {})
    if verb in (xs.VERB_PASSED, xs.VERB_FAILED):
        return (1.0 if result.get("success") else 0.0), 1.0
    score = result["score"]
    if "raw" in score:
        return float(score["raw"]), float(score["max"])
    return round(float(score["scaled"]) * 100, 4), 100.0


def to_caliper(config: xs.XapiConfig, statement: Mapping[str, Any]) -> dict[str, Any]:
    """The Caliper 1.2 event that says what ``statement`` says."""
    sid, verb = statement["id"], statement["verb"]["id"]
    person = _person(config, statement)
    extensions = {"xapiStatementId": sid,
                  "openedxEventType": statement["context"]["extensions"][xs.EXT_EVENT_TYPE]}
    for key in (xs.EXT_MODE, xs.EXT_LETTER_GRADE, xs.EXT_CERTIFICATE):
        if key in statement["context"]["extensions"]:
            extensions[key.rsplit("/", 1)[-1]] = statement["context"]["extensions"][key]
    event: dict[str, Any] = {"@context": CALIPER_CONTEXT, "id": _urn(sid, "event"),
                             "eventTime": statement["timestamp"], "edApp": _edapp(config)}
    is_certificate = statement["object"].get("definition", {}).get("type") == xs.CERTIFICATE_TYPE
    if verb in (xs.VERB_REGISTERED, xs.VERB_UNREGISTERED):
        event.update(type="Event", actor=person, object=_course_of(config, statement),
                     action="Activated" if verb == xs.VERB_REGISTERED else "Deactivated")
    elif verb == xs.VERB_EARNED and is_certificate:
        event.update(type="Event", actor=person, action="Completed", object=_course_of(config, statement))
    else:
        assignable: dict[str, Any] = _course_of(config, statement)
        if verb == xs.VERB_SCORED:
            assignable = {"id": statement["object"]["id"], "type": "AssessmentItem",
                          "isPartOf": _course_of(config, statement)}
        attempt = {"id": _urn(sid, "attempt"), "type": "Attempt", "assignee": person, "assignable": assignable,
                   "count": 1, "dateCreated": statement["timestamp"]}
        given, maximum = _score(statement)
        event.update(type="GradeEvent", actor=_edapp(config), action="Graded", object=attempt,
                     generated={"id": _urn(sid, "score"), "type": "Score", "attempt": attempt["id"],
                                "scoreGiven": given, "maxScore": maximum,
                                "scoredBy": _edapp(config)["id"]})
        if verb in (xs.VERB_PASSED, xs.VERB_FAILED):
            extensions["passed"] = verb == xs.VERB_PASSED
    event["extensions"] = extensions
    return event


def caliper_envelope(config: xs.XapiConfig, events: Sequence[Mapping[str, Any]],
                     send_time: dt.datetime | None = None) -> dict[str, Any]:
    """A Caliper 1.2 envelope around ``events``, from this feed's sensor."""
    return {"sensor": f"{config.lms_url}/edbus/xapi-feed",
            "sendTime": xs.timestamp(send_time or dt.datetime.now(dt.UTC)),
            "dataVersion": CALIPER_CONTEXT, "data": list(events)}
