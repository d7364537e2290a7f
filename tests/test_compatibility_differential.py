"""The compatibility checker agrees with Apache Avro's own rules (the ``avro`` package's
``ReaderWriterCompatibilityChecker``, a port of Java's ``SchemaCompatibility``) on generated schema pairs.

A pair is two versions of one record whose fields come from a small pool of names, so readers and writers
share fields often: each shared field may change type, gain or lose a default, become optional, change
its enum's symbols, its fixed's size or its nested record's fields. Every disagreement is a bug in one of
the two (the examples below pin the ones found)."""

from __future__ import annotations

import json
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edbus.schema import can_read

PRIMITIVES = ["boolean", "int", "long", "float", "double", "string", "bytes"]
PRIMITIVE_DEFAULTS: dict[str, Any] = {"boolean": False, "int": 0, "long": 0, "float": 0.0, "double": 0.0,
                                      "string": "", "bytes": ""}
FIELD_NAMES = ["a", "b", "c", "d"]


def avro_can_read(reader: Any, writer: Any) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer)))
    return result.compatibility is SchemaCompatibilityType.compatible


@st.composite
def field_types(draw: st.DrawFn, field: str, depth: int = 0, union: bool = True) -> tuple[Any, list[Any]]:
    """A field's type and the defaults valid for it (named types are named after the field, so reader and
    writer versions of one field share names unless the draw renames them)."""
    kinds = ["primitive"] * 3 + ["array", "map", "enum", "fixed"]
    kinds += (["optional"] if union else []) + (["record"] if depth == 0 else [])
    kind = draw(st.sampled_from(kinds))
    suffix = draw(st.sampled_from(["", "", "", "2"]))  # now and then a renamed type
    if kind == "primitive":
        name = draw(st.sampled_from(PRIMITIVES))
        return name, [PRIMITIVE_DEFAULTS[name]]
    if kind == "optional":
        inner, _ = draw(field_types(field, depth, union=False))
        first_null = draw(st.booleans())
        return (["null", inner] if first_null else [inner, "null"]), ([None] if first_null else [])
    if kind == "array":
        items = draw(st.sampled_from(PRIMITIVES))
        return {"type": "array", "items": items}, [[]]
    if kind == "map":
        values = draw(st.sampled_from(PRIMITIVES))
        return {"type": "map", "values": values}, [{}]
    if kind == "enum":
        symbols = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=3, unique=True))
        enum: dict[str, Any] = {"type": "enum", "name": f"E{field}{suffix}", "symbols": symbols}
        if draw(st.booleans()):
            enum["default"] = symbols[0]
        return enum, [symbols[0]]
    if kind == "fixed":
        return {"type": "fixed", "name": f"F{field}{suffix}", "size": draw(st.sampled_from([4, 8]))}, []
    fields = draw(record_fields(depth + 1, field + "_"))
    return {"type": "record", "name": f"N{field}{suffix}", "fields": fields}, []


@st.composite
def record_fields(draw: st.DrawFn, depth: int = 0, path: str = "") -> list[dict[str, Any]]:
    names = draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=4, unique=True))
    fields = []
    for name in names:
        ftype, defaults = draw(field_types(path + name, depth))
        field: dict[str, Any] = {"name": name, "type": ftype}
        if defaults and draw(st.booleans()):
            field["default"] = defaults[0]
        fields.append(field)
    return fields


@st.composite
def evolved(draw: st.DrawFn, fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The next version of ``fields``: each kept, dropped, given a new type or a default toggled, and new
    fields added; most pairs are then one small change apart, as real schema versions are."""
    out = []
    for field in fields:
        change = draw(st.sampled_from(["keep", "drop", "retype", "nudge", "nudge", "default"]))
        if change == "drop":
            continue
        field = dict(field)
        if change == "retype":
            field.pop("default", None)
            field["type"], defaults = draw(field_types(field["name"]))
            if defaults and draw(st.booleans()):
                field["default"] = defaults[0]
        elif change == "nudge":  # the small steps real versions take: another primitive, (not) optional
            field.pop("default", None)
            ftype = field["type"]
            if isinstance(ftype, str):
                field["type"] = draw(st.sampled_from([*PRIMITIVES, ["null", ftype]]))
            elif isinstance(ftype, list):
                field["type"] = next(t for t in ftype if t != "null")
        elif change == "default" and "default" in field:
            del field["default"]
        out.append(field)
    taken = {f["name"] for f in out}
    for added in draw(record_fields()):
        if added["name"] not in taken:
            out.append(added)
    return out


@st.composite
def schema_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    writer = {"type": "record", "name": "Payload", "fields": draw(record_fields())}
    name = draw(st.sampled_from(["Payload", "Payload", "Other"]))
    fields = draw(st.one_of(evolved(writer["fields"]), record_fields()))
    reader = {"type": "record", "name": name, "fields": fields}
    return (reader, writer) if draw(st.booleans()) else (writer | {"name": name}, reader | {"name": "Payload"})


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_pairs())
def test_can_read_agrees_with_apache_avro_on_generated_schema_pairs(pair: tuple[dict[str, Any], dict[str, Any]]
                                                                    ) -> None:
    reader, writer = pair
    ours = can_read(reader, writer)
    assert (ours is None) == avro_can_read(reader, writer), (
        f"edbus says {ours or 'compatible'!r}, Apache Avro the opposite\nreader {json.dumps(reader)}\n"
        f"writer {json.dumps(writer)}")


@settings(max_examples=500, deadline=None)
@given(schema_pairs())
def test_a_schema_reads_its_own_data_by_both_checkers(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    for schema in pair:
        assert can_read(schema, schema) is None
        assert avro_can_read(schema, schema)
