"""Checks written from the specifications: xAPI 1.0.3 statements (Data, section 2.4) and IMS Caliper 1.2
events and envelopes. Each function returns the list of problems found (empty: valid), naming the path.

These are the rules this feed's output must satisfy; they are not a complete validator of either standard
(no JSON-LD expansion, no profile rules).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["caliper_envelope_problems", "caliper_event_problems", "statement_problems"]

_STATEMENT_KEYS = {"id", "actor", "verb", "object", "result", "context", "timestamp", "stored", "authority",
                   "version", "attachments"}
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_CALIPER_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")  # ISO 8601, UTC, milliseconds
_DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")


def _is_uuid(value: object) -> bool:
    try:
        parsed = uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str) and parsed.variant == uuid.RFC_4122 and str(parsed) == value.lower()


def _is_iri(value: object) -> bool:
    return isinstance(value, str) and bool(_IRI.match(value))


def _is_timestamp(value: object) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _language_map(value: object, path: str, problems: list[str]) -> None:
    if not isinstance(value, Mapping) or not value:
        problems.append(f"{path}: a language map (object of language tag to string) is required")
        return
    for tag, text in value.items():
        if not _LANGUAGE_TAG.match(str(tag)) or not isinstance(text, str):
            problems.append(f"{path}.{tag}: not a RFC 5646 language tag mapped to a string")


def _extensions(value: object, path: str, problems: list[str]) -> None:
    if not isinstance(value, Mapping):
        problems.append(f"{path}: extensions must be an object")
        return
    problems.extend(f"{path}: key {key!r} is not an IRI" for key in value if not _is_iri(key))


def _agent(agent: object, path: str, problems: list[str]) -> None:
    if not isinstance(agent, Mapping):
        problems.append(f"{path}: an Agent object is required")
        return
    if agent.get("objectType", "Agent") != "Agent":
        problems.append(f"{path}.objectType: only Agent actors are produced, got {agent.get('objectType')!r}")
    ifis = [k for k in ("mbox", "mbox_sha1sum", "openid", "account") if k in agent]
    if len(ifis) != 1:
        problems.append(f"{path}: exactly one inverse functional identifier is required, got {ifis}")
    account = agent.get("account")
    if "account" in agent and (not isinstance(account, Mapping) or not _is_iri(account.get("homePage"))
                               or not isinstance(account.get("name"), str) or not account.get("name")):
        problems.append(f"{path}.account: homePage (an IRL) and a non-empty name are required")


def _activity(activity: object, path: str, problems: list[str]) -> None:
    if not isinstance(activity, Mapping):
        problems.append(f"{path}: an Activity object is required")
        return
    if activity.get("objectType", "Activity") != "Activity":
        problems.append(f"{path}.objectType: expected Activity, got {activity.get('objectType')!r}")
    if not _is_iri(activity.get("id")):
        problems.append(f"{path}.id: an IRI is required, got {activity.get('id')!r}")
    definition = activity.get("definition")
    if definition is None:
        return
    if not isinstance(definition, Mapping):
        problems.append(f"{path}.definition: must be an object")
        return
    if "type" in definition and not _is_iri(definition["type"]):
        problems.append(f"{path}.definition.type: an IRI is required")
    for key in ("name", "description"):
        if key in definition:
            _language_map(definition[key], f"{path}.definition.{key}", problems)
    if "extensions" in definition:
        _extensions(definition["extensions"], f"{path}.definition.extensions", problems)


def _result(result: object, problems: list[str]) -> None:
    if not isinstance(result, Mapping):
        problems.append("result: must be an object")
        return
    for key in ("success", "completion"):
        if key in result and not isinstance(result[key], bool):
            problems.append(f"result.{key}: must be a boolean")
    if "duration" in result and not (isinstance(result["duration"], str) and _DURATION.match(result["duration"])):
        problems.append("result.duration: must be an ISO 8601 duration")
    score = result.get("score")
    if score is None:
        return
    if not isinstance(score, Mapping):
        problems.append("result.score: must be an object")
        return
    numbers = {k: score[k] for k in ("scaled", "raw", "min", "max") if k in score}
    bad = [k for k, v in numbers.items() if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad:
        problems.append(f"result.score.{bad[0]}: must be a number")
        return
    if "scaled" in numbers and not -1 <= numbers["scaled"] <= 1:
        problems.append(f"result.score.scaled: {numbers['scaled']} is outside [-1, 1]")
    if "min" in numbers and "max" in numbers and not numbers["min"] < numbers["max"]:
        problems.append("result.score: min must be less than max")
    if "raw" in numbers and (("min" in numbers and numbers["raw"] < numbers["min"])
                             or ("max" in numbers and numbers["raw"] > numbers["max"])):
        problems.append(f"result.score.raw: {numbers['raw']} is outside [min, max]")


def _context(context: object, problems: list[str]) -> None:
    if not isinstance(context, Mapping):
        problems.append("context: must be an object")
        return
    if "registration" in context and not _is_uuid(context["registration"]):
        problems.append("context.registration: must be a UUID")
    for key in ("platform", "language"):
        if key in context and not isinstance(context[key], str):
            problems.append(f"context.{key}: must be a string")
    activities = context.get("contextActivities", {})
    if not isinstance(activities, Mapping):
        problems.append("context.contextActivities: must be an object")
        activities = {}
    for key, value in activities.items():
        if key not in ("parent", "grouping", "category", "other"):
            problems.append(f"context.contextActivities.{key}: not a context activity type")
        for i, activity in enumerate(value if isinstance(value, list) else [value]):
            _activity(activity, f"context.contextActivities.{key}[{i}]", problems)
    if "extensions" in context:
        _extensions(context["extensions"], "context.extensions", problems)


def statement_problems(statement: object) -> list[str]:
    """What makes ``statement`` an invalid xAPI 1.0.3 statement of this feed (empty: valid)."""
    if not isinstance(statement, Mapping):
        return ["a statement must be a JSON object"]
    problems = [f"{key}: not a statement property" for key in statement if key not in _STATEMENT_KEYS]
    if not _is_uuid(statement.get("id")):
        problems.append(f"id: a lowercase RFC 4122 UUID is required, got {statement.get('id')!r}")
    _agent(statement.get("actor"), "actor", problems)
    verb = statement.get("verb")
    if not isinstance(verb, Mapping) or not _is_iri(verb.get("id")):
        problems.append("verb.id: an IRI is required")
    elif "display" in verb:
        _language_map(verb["display"], "verb.display", problems)
    _activity(statement.get("object"), "object", problems)
    if "result" in statement:
        _result(statement["result"], problems)
    if "context" in statement:
        _context(statement["context"], problems)
    if not _is_timestamp(statement.get("timestamp")):
        problems.append(f"timestamp: an ISO 8601 time with a time zone is required, got {statement.get('timestamp')!r}")
    if "version" in statement and not str(statement["version"]).startswith("1.0."):
        problems.append("version: must be 1.0.x")
    return problems


# Caliper 1.2: the event types this feed produces, their allowed actions and the object types they take
_CALIPER_CONTEXT = "http://purl.imsglobal.org/ctx/caliper/v1p2"
_CALIPER_ACTIONS = {
    "Event": None,  # the generic Event takes any action of the Caliper vocabulary
    "GradeEvent": {"Graded"},
    "ViewEvent": {"Viewed"},
}
_CALIPER_VOCABULARY = {"Activated", "Deactivated", "Completed", "Graded", "Viewed", "Started", "Submitted",
                       "Created", "Modified", "Deleted", "NavigatedTo", "LoggedIn", "LoggedOut", "Reset"}
_AGENT_TYPES = {"Person", "SoftwareApplication", "Organization", "Group", "Agent"}


def _entity(value: object, path: str, problems: list[str], types: set[str] | None = None) -> Mapping[str, Any]:
    """An entity described (an object with an IRI id and a type) or referenced (its IRI id alone)."""
    if isinstance(value, str):
        if not _is_iri(value):
            problems.append(f"{path}: an entity id must be an IRI, got {value!r}")
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{path}: an entity (object or IRI) is required")
        return {}
    if not _is_iri(value.get("id")):
        problems.append(f"{path}.id: an IRI is required, got {value.get('id')!r}")
    if not isinstance(value.get("type"), str):
        problems.append(f"{path}.type: required")
    elif types is not None and value["type"] not in types:
        problems.append(f"{path}.type: {value['type']!r} is not one of {sorted(types)}")
    return value


def caliper_event_problems(event: object) -> list[str]:
    """What makes ``event`` an invalid Caliper 1.2 event of this feed (empty: valid)."""
    problems: list[str] = []
    if not isinstance(event, Mapping):
        return ["a Caliper event must be a JSON object"]
    if event.get("@context") != _CALIPER_CONTEXT:
        problems.append(f"@context: must be {_CALIPER_CONTEXT}")
    event_id = event.get("id")
    if not (isinstance(event_id, str) and event_id.startswith("urn:uuid:") and _is_uuid(event_id[9:])):
        problems.append(f"id: a urn:uuid: UUID is required, got {event_id!r}")
    kind = event.get("type")
    if kind not in _CALIPER_ACTIONS:
        problems.append(f"type: {kind!r} is not a Caliper event type this feed produces")
        return problems
    action = event.get("action")
    allowed = _CALIPER_ACTIONS[kind] or _CALIPER_VOCABULARY
    if action not in allowed:
        problems.append(f"action: {action!r} is not allowed for {kind} ({sorted(allowed)})")
    _entity(event.get("actor"), "actor", problems, _AGENT_TYPES)
    if not _CALIPER_TIME.match(str(event.get("eventTime", ""))):
        problems.append(f"eventTime: ISO 8601 UTC with milliseconds is required, got {event.get('eventTime')!r}")
    if "edApp" in event:
        _entity(event["edApp"], "edApp", problems, {"SoftwareApplication"})
    if "extensions" in event and not isinstance(event["extensions"], Mapping):
        problems.append("extensions: must be an object")
    if kind == "GradeEvent":
        attempt = _entity(event.get("object"), "object", problems, {"Attempt"})
        if attempt:
            _entity(attempt.get("assignee"), "object.assignee", problems, {"Person"})
            _entity(attempt.get("assignable"), "object.assignable", problems)
        score = _entity(event.get("generated"), "generated", problems, {"Score"})
        for key in ("scoreGiven", "maxScore"):
            if score and not isinstance(score.get(key), int | float):
                problems.append(f"generated.{key}: a number is required")
        given, maximum = (score.get("scoreGiven"), score.get("maxScore")) if score else (None, None)
        if isinstance(given, int | float) and isinstance(maximum, int | float) and not 0 <= given <= maximum:
            problems.append("generated.scoreGiven: must be between 0 and maxScore")
    elif kind == "ViewEvent":
        _entity(event.get("object"), "object", problems)
    else:
        _entity(event.get("object"), "object", problems)
    return problems


def caliper_envelope_problems(envelope: object) -> list[str]:
    """What makes ``envelope`` an invalid Caliper 1.2 envelope, including its events (empty: valid)."""
    if not isinstance(envelope, Mapping):
        return ["a Caliper envelope must be a JSON object"]
    problems: list[str] = []
    if not _is_iri(envelope.get("sensor")):
        problems.append("sensor: an IRI is required")
    if not _CALIPER_TIME.match(str(envelope.get("sendTime", ""))):
        problems.append("sendTime: ISO 8601 UTC with milliseconds is required")
    if envelope.get("dataVersion") != _CALIPER_CONTEXT:
        problems.append(f"dataVersion: must be {_CALIPER_CONTEXT}")
    data = envelope.get("data")
    if not isinstance(data, list) or not data:
        problems.append("data: a non-empty list of events is required")
        return problems
    for i, event in enumerate(data):
        problems.extend(f"data[{i}].{p}" for p in caliper_event_problems(event))
    return problems
