"""The schema registry: every event type's schema versions and each topic's compatibility rule.

``SchemaRegistry`` is what the bus uses. The embedded store provides ``CheckedSchemaRegistry``, which
checks compatibility in-process over a ``SchemaStorage``; the Pulsar backend delegates to the broker's
own registry.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import threading
from typing import Any, Protocol

from edbus.errors import ConfigError, NotFoundError
from edbus.schema.compatibility import Rule, check

__all__ = ["CheckedSchemaRegistry", "check_registered", "SchemaRegistry", "SchemaStorage", "SchemaVersion",
           "DEFAULT_RULE", "canonical"]

DEFAULT_RULE = Rule.FORWARD  # what openedx-events follows: producers may only add optional fields


def canonical(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def parse_rule(text: str) -> Rule:
    try:
        return Rule(text.upper())
    except ValueError:
        raise ConfigError(f"unknown compatibility rule {text!r}: one of "
                          + ", ".join(r.value for r in Rule)) from None


@dataclasses.dataclass(frozen=True, slots=True)
class SchemaVersion:
    event_type: str
    version: int
    schema: dict[str, Any]
    registered_at: float


def check_registered(rule: Rule, schema: dict[str, Any], existing: list[SchemaVersion],
                     event_type: str) -> int | None:
    """The version ``schema`` already has among ``existing``, or None. A schema registered through a
    topic with a laxer rule must pass this topic's rule too, against the versions before it."""
    text = canonical(schema)
    for i, v in enumerate(existing):
        if canonical(v.schema) == text:
            check(rule, schema, [e.schema for e in existing[:i]], event_type)
            return v.version
    return None


class SchemaRegistry(abc.ABC):
    @abc.abstractmethod
    def register(self, topic: str, event_type: str, schema: dict[str, Any]) -> int:
        """The version of ``schema``, registering it if new; ``IncompatibleSchemaError`` if refused."""

    @abc.abstractmethod
    def get(self, event_type: str, version: int) -> dict[str, Any]:
        """One version; ``NotFoundError`` when there is no such type or version."""

    @abc.abstractmethod
    def versions(self, event_type: str) -> list[SchemaVersion]:
        """Every version of a type, oldest first (empty when unknown)."""

    @abc.abstractmethod
    def event_types(self) -> list[str]:
        """Every registered event type name."""

    @abc.abstractmethod
    def rule(self, topic: str) -> Rule:
        """The topic's compatibility rule (``DEFAULT_RULE`` unless set)."""

    @abc.abstractmethod
    def set_rule(self, topic: str, rule: Rule) -> None:
        """Set the topic's compatibility rule."""


class SchemaStorage(Protocol):
    def load_schema_versions(self, event_type: str) -> list[tuple[int, str, float]]: ...
    def insert_schema_version(self, event_type: str, version: int, schema_json: str) -> bool: ...
    def list_event_types(self) -> list[str]: ...
    def load_rule(self, topic: str) -> str | None: ...
    def save_rule(self, topic: str, rule: str) -> None: ...


class CheckedSchemaRegistry(SchemaRegistry):
    """Compatibility checked here, versions kept in the store; safe across processes (insert races
    are detected by the store's unique (type, version) key and retried)."""

    def __init__(self, storage: SchemaStorage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._by_version: dict[tuple[str, int], dict[str, Any]] = {}
        self._registered: dict[tuple[str, str, str], int] = {}

    def register(self, topic: str, event_type: str, schema: dict[str, Any]) -> int:
        text = canonical(schema)
        cache_key = (topic, event_type, text)
        with self._lock:
            found = self._registered.get(cache_key)
            if found is not None:
                return found
            rule = self.rule(topic)
            while True:
                existing = self.versions(event_type)
                already = check_registered(rule, schema, existing, event_type)
                if already is not None:
                    self._registered[cache_key] = already
                    return already
                check(rule, schema, [v.schema for v in existing], event_type)
                version = len(existing) + 1
                if self._storage.insert_schema_version(event_type, version, text):
                    self._registered[cache_key] = version
                    return version
                # another process registered a version meanwhile: check again against it

    def get(self, event_type: str, version: int) -> dict[str, Any]:
        found = self._by_version.get((event_type, version))
        if found is None:
            for v in self.versions(event_type):
                self._by_version[(event_type, v.version)] = v.schema
            found = self._by_version.get((event_type, version))
            if found is None:
                raise NotFoundError(f"no schema version {version} for event type {event_type!r}")
        return found

    def versions(self, event_type: str) -> list[SchemaVersion]:
        return [SchemaVersion(event_type, v, json.loads(text), at)
                for v, text, at in self._storage.load_schema_versions(event_type)]

    def event_types(self) -> list[str]:
        return self._storage.list_event_types()

    def rule(self, topic: str) -> Rule:
        text = self._storage.load_rule(topic)
        return Rule(text) if text else DEFAULT_RULE

    def set_rule(self, topic: str, rule: Rule) -> None:
        self._storage.save_rule(topic, rule.value)
