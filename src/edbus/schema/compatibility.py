"""Avro schema compatibility under a rule, with an error that names the field at fault.

``can_read(reader, writer)`` follows the Avro specification's schema resolution: a reader can read data
written with a writer schema when every writer field it needs is there (or it has a default), types
match or promote (int→long→float→double, string↔bytes), enum symbols and union branches resolve.

Rules (as in Confluent's and Pulsar's registries):
- BACKWARD: the new schema reads data written with the previous one (consumers upgrade first);
- FORWARD: the previous schema reads data written with the new one (producers upgrade first; the rule
  openedx-events follows: add optional fields only);
- FULL: both; ``*_TRANSITIVE``: against every earlier version, not only the latest; NONE: no check.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from edbus.errors import IncompatibleSchemaError

__all__ = ["Rule", "can_read", "check"]

_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


class Rule(enum.StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"


def _resolve(schema: Any, names: dict[str, Any]) -> Any:
    """Follow named references; remember named definitions."""
    if isinstance(schema, str):
        return names.get(schema, schema)
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
        names[schema["name"]] = schema
    return schema


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        t = schema["type"]
        return t if isinstance(t, str) else _type_name(t)
    return str(schema)


def _collect(schema: Any, names: dict[str, Any]) -> dict[str, Any]:
    """Every named type defined anywhere in ``schema``, so references resolve in any order."""
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, names)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            names.setdefault(schema["name"], schema)
        if kind == "record":
            for field in schema.get("fields", ()):
                _collect(field["type"], names)
        elif kind == "array":
            _collect(schema["items"], names)
        elif kind == "map":
            _collect(schema["values"], names)
        elif isinstance(kind, (dict, list)):
            _collect(kind, names)
    return names


def can_read(reader: Any, writer: Any) -> str | None:
    """None when ``reader`` can read data written with ``writer``; otherwise why not, naming the field."""
    return _can_read(reader, writer, "", _collect(reader, {}), _collect(writer, {}))


def _can_read(reader: Any, writer: Any, path: str, rnames: dict[str, Any], wnames: dict[str, Any]) -> str | None:
    reader = _resolve(reader, rnames)
    writer = _resolve(writer, wnames)
    where = path or "the payload"
    if isinstance(writer, list):
        for branch in writer:
            why = _can_read(reader, branch, path, rnames, wnames)
            if why:
                return why
        return None
    if isinstance(reader, list):
        for branch in reader:
            if _can_read(branch, writer, path, rnames, wnames) is None:
                return None
        return f"{where}: type {_type_name(writer)} written is not among the reader's {_union(reader)}"
    rt, wt = _type_name(reader), _type_name(writer)
    if isinstance(reader, dict) and isinstance(reader["type"], (dict, list)):
        return _can_read(reader["type"], writer, path, rnames, wnames)
    if isinstance(writer, dict) and isinstance(writer["type"], (dict, list)):
        return _can_read(reader, writer["type"], path, rnames, wnames)
    if rt != wt:
        if rt in _PROMOTIONS.get(wt, ()):
            return None
        return f"{where}: type changed from {wt} to {rt}"
    if rt in ("record", "enum", "fixed") and not _same_name(reader, writer):
        return f"{where}: {rt} name changed from {writer['name']} to {reader['name']}"
    if rt == "record":
        return _records(reader, writer, path, rnames, wnames)
    if rt == "enum":
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            return f"{where}: enum symbol(s) {', '.join(missing)} unknown to the reader"
        return None
    if rt == "array":
        return _can_read(reader["items"], writer["items"], f"{path}[]", rnames, wnames)
    if rt == "map":
        return _can_read(reader["values"], writer["values"], f"{path}{{}}", rnames, wnames)
    if rt == "fixed" and reader.get("size") != writer.get("size"):
        return f"{where}: fixed size changed from {writer.get('size')} to {reader.get('size')}"
    return None


def _records(reader: dict[str, Any], writer: dict[str, Any], path: str,
             rnames: dict[str, Any], wnames: dict[str, Any]) -> str | None:
    written = {f["name"]: f for f in writer["fields"]}
    for f in writer["fields"]:
        for alias in f.get("aliases", ()):
            written.setdefault(alias, f)
    for field in reader["fields"]:
        fpath = f"{path}.{field['name']}" if path else field["name"]
        wf = written.get(field["name"])
        if wf is None:
            for alias in field.get("aliases", ()):
                wf = written.get(alias)
                if wf is not None:
                    break
        if wf is None:
            if "default" not in field:
                return f"field '{fpath}' is missing from the writer's schema and has no default"
            continue
        why = _can_read(field["type"], wf["type"], fpath, rnames, wnames)
        if why:
            return f"field '{fpath}': {why.split(': ', 1)[-1]}" if why.startswith(fpath) else why
    return None


def _same_name(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Named types resolve by their unqualified names, or one of the reader's aliases (Avro 1.9+)."""
    def short(name: str) -> str:
        return name.rsplit(".", 1)[-1]

    return short(writer["name"]) in {short(n) for n in (reader["name"], *reader.get("aliases", ()))}


def _union(schema: list[Any]) -> str:
    return "[" + ", ".join(_type_name(b) for b in schema) + "]"


def check(rule: Rule, new: Any, previous: Sequence[Any], subject: str) -> None:
    """Raise ``IncompatibleSchemaError`` when ``new`` breaks ``rule`` against ``previous`` (oldest first)."""
    if rule is Rule.NONE or not previous:
        return
    against = previous if rule.name.endswith("TRANSITIVE") else previous[-1:]
    for old in reversed(against):
        version = previous.index(old) + 1
        directions = []
        if rule.name.startswith(("BACKWARD", "FULL")):
            directions.append((f"new readers cannot read version {version} data", new, old))
        if rule.name.startswith(("FORWARD", "FULL")):
            directions.append((f"version {version} readers cannot read the new data", old, new))
        for what, reader, writer in directions:
            why = can_read(reader, writer)
            if why:
                raise IncompatibleSchemaError(f"{subject}: schema refused under {rule.value}: {what}: {why}")
