"""Schemas in Pulsar's own registry: one subject topic per event type (``__edbus_schema.<type>``, never
carrying messages) holds the type's Avro schema versions; the broker checks each new version under the
subject's compatibility strategy and refuses an incompatible one with its reason. A data topic's rule is
kept as that topic's own ``schemaCompatibilityStrategy`` policy and applied to the subjects of the types
registered through it. Pulsar counts versions from 0; edbus from 1.

A subject topic has no producer and no consumer, so the broker's inactive-topic clean-up (on by default,
mode ``delete_when_no_subscriptions``) would delete it, and its schema with it, about a minute after the
registration: each subject topic therefore holds a durable subscription (``KEEP_SUB``) that nothing reads.
"""

from __future__ import annotations

import html
import json
import threading
import time
from typing import Any

from edbus.backends.pulsar.admin import Admin, AdminConflict
from edbus.errors import IncompatibleSchemaError, NotFoundError, StoreError
from edbus.schema.compatibility import Rule, check
from edbus.schema.registry import DEFAULT_RULE, SchemaRegistry, SchemaVersion, canonical, check_registered

__all__ = ["KEEP_SUB", "SUBJECT_PREFIX", "PulsarSchemaRegistry"]

SUBJECT_PREFIX = "__edbus_schema."
KEEP_SUB = "edbus-schema-keep"  # durable subscription that keeps a subject topic (and its schema) alive
_TO_PULSAR = {Rule.NONE: "ALWAYS_COMPATIBLE"}


class PulsarSchemaRegistry(SchemaRegistry):
    def __init__(self, admin: Admin, prefix: str) -> None:
        self.admin = admin
        self.prefix = prefix
        self._lock = threading.Lock()
        self._by_version: dict[tuple[str, int], dict[str, Any]] = {}
        self._registered: dict[tuple[str, str, str], int] = {}

    def _subject(self, event_type: str) -> str:
        return f"{self.prefix}{SUBJECT_PREFIX}{event_type}"

    def register(self, topic: str, event_type: str, schema: dict[str, Any]) -> int:
        text = canonical(schema)
        cache_key = (topic, event_type, text)
        with self._lock:
            found = self._registered.get(cache_key)
            if found is not None:
                return found
            subject = self._subject(event_type)
            self.admin.create_topic(subject)
            # also for a subject registered before this subscription existed (returns False then)
            self.admin.create_subscription(subject, KEEP_SUB, True, {})
            rule = self.rule(topic)
            existing = self.versions(event_type)
            # registered already, perhaps through a laxer topic: Pulsar would return the existing version
            # without a check, so this topic's rule is checked here
            check_registered(rule, schema, existing, event_type)
            self._strategy(subject, rule)
            body = {"type": "AVRO", "schema": text, "properties": {}}
            try:
                answer = self.admin.call("POST", self.admin.schema_path(subject) + "/schema", body)
            except AdminConflict as exc:
                raise self._refused(rule, schema, existing, event_type, topic, exc.reason) from None
            version = int(answer["version"]["version"]) + 1
            self._registered[cache_key] = version
            self._by_version[(event_type, version)] = schema
            return version

    @staticmethod
    def _refused(rule: Rule, schema: dict[str, Any], existing: list[SchemaVersion], event_type: str,
                 topic: str, reason: str) -> IncompatibleSchemaError:
        """The broker's refusal, explained with the field that breaks the rule when edbus's own check
        finds it (the broker's reason is Avro's, which names no field)."""
        broker = html.unescape(reason).split("\n", 1)[0].strip()
        try:
            check(rule, schema, [v.schema for v in existing], event_type)
        except IncompatibleSchemaError as exc:
            return IncompatibleSchemaError(f"{exc} (topic {topic!r}; refused by Pulsar's registry: {broker})")
        return IncompatibleSchemaError(f"schema of {event_type!r} refused by Pulsar's registry under rule "
                                       f"{rule.value} (topic {topic!r}): {broker}")

    def get(self, event_type: str, version: int) -> dict[str, Any]:
        found = self._by_version.get((event_type, version))
        if found is None:
            try:
                answer = self.admin.call("GET", f"{self.admin.schema_path(self._subject(event_type))}"
                                                f"/schema/{version - 1}")
            except NotFoundError:
                raise NotFoundError(f"no schema version {version} for event type {event_type!r}") from None
            found = json.loads(answer["data"])
            self._by_version[(event_type, version)] = found
        return found

    def versions(self, event_type: str) -> list[SchemaVersion]:
        try:
            answer = self.admin.call("GET", self.admin.schema_path(self._subject(event_type)) + "/schemas")
        except NotFoundError:
            return []
        out = [SchemaVersion(event_type, int(v["version"]) + 1, json.loads(v["data"]), v.get("timestamp", 0) / 1000)
               for v in (answer or {}).get("getSchemaResponses", [])]
        return sorted(out, key=lambda v: v.version)

    def event_types(self) -> list[str]:
        start = self.prefix + SUBJECT_PREFIX
        return sorted({n[len(start):] for n in self.admin.list_topics() if n.startswith(start)})

    def rule(self, topic: str) -> Rule:
        try:
            found = self.admin.call("GET", self.admin.topic_path(self.prefix + topic) + "/schemaCompatibilityStrategy")
        except NotFoundError:
            return DEFAULT_RULE
        if found == "ALWAYS_COMPATIBLE":
            return Rule.NONE
        try:
            return Rule(found)
        except ValueError:
            return DEFAULT_RULE

    def set_rule(self, topic: str, rule: Rule) -> None:
        self.admin.create_topic(self.prefix + topic)
        self._strategy(self.prefix + topic, rule)
        self._registered = {k: v for k, v in self._registered.items() if k[0] != topic}

    def _strategy(self, name: str, rule: Rule) -> None:
        """Set a topic's ``schemaCompatibilityStrategy`` policy and wait until the broker applies it
        (topic policies travel through a system topic)."""
        strategy = _TO_PULSAR.get(rule, rule.value)
        path = self.admin.topic_path(name) + "/schemaCompatibilityStrategy"
        if self.admin.call("GET", path) == strategy:
            return
        self.admin.call("PUT", path, raw=json.dumps(strategy))
        deadline = time.monotonic() + 10
        while self.admin.call("GET", path) != strategy:
            if time.monotonic() > deadline:
                raise StoreError(f"Pulsar did not apply compatibility {strategy} to {name} within 10 s")
            time.sleep(0.02)  # poll interval
