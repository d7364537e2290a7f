"""A schemaless Avro binary writer made for one schema: the bytes fastavro's ``schemaless_writer`` writes,
at less than half its cost per event (its per-call setup is most of its time on a small record).

It writes what ``PayloadCodec.to_avro`` produces — checked and converted values — for the schemas payload
classes compile to: records, ``X | None`` unions, arrays, maps, enums, the primitives and the
``timestamp-micros``, ``date`` and ``uuid`` logical types. For any other schema ``compile_writer``
returns None and the codec uses fastavro. ``tests/test_avro_writer.py`` checks the bytes against
fastavro's for random payloads.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["compile_writer"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAYS_SHIFT = dt.date(1970, 1, 1).toordinal()
_PRIMITIVES = ("null", "boolean", "int", "long", "double", "bytes", "string")


def _long(out: bytearray, value: int) -> None:
    """Zigzag, then base-128 varint, as Avro writes int and long."""
    z = (value << 1) ^ (value >> 63)
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _micros(value: dt.datetime) -> int:
    delta = value - _EPOCH  # aware: to_avro refuses naive datetimes
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


class _Unsupported(Exception):
    pass


class _Source:
    """Python source of a writer function, built depth-first over the schema."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}  # named types met so far (a later use may be by name only)
        self.consts: dict[str, Any] = {}  # enum symbol -> index maps, by generated name
        self._n = 0

    def var(self) -> str:
        self._n += 1
        return f"v{self._n}"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def value(self, schema: Any, v: str, depth: int) -> None:
        """Lines that write the value in variable ``v`` by ``schema``."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            if schema not in self.names:
                raise _Unsupported(schema)
            schema = self.names[schema]
        if isinstance(schema, list):
            self.union(schema, v, depth)
            return
        if isinstance(schema, dict):
            kind = schema.get("type")
            logical = schema.get("logicalType")
            if kind in ("record", "enum", "fixed") and "name" in schema:
                self.names[schema["name"]] = schema
            if kind == "record":
                for field in schema["fields"]:
                    item = self.var()
                    self.emit(depth, f"{item} = {v}[{field['name']!r}]")
                    self.value(field["type"], item, depth)
                return
            if kind == "enum":
                table = f"enum{len(self.consts)}"
                self.consts[table] = {name: i for i, name in enumerate(schema["symbols"])}
                self.emit(depth, f"out.append({table}[{v}] << 1)" if len(schema["symbols"]) <= 64
                          else f"_long(out, {table}[{v}])")
                return
            if kind in ("array", "map"):
                self.container(schema, v, depth)
                return
            if logical == "timestamp-micros" and kind == "long":
                self.emit(depth, f"_long(out, _micros({v}))")
                return
            if logical == "date" and kind == "int":
                self.emit(depth, f"_long(out, {v}.toordinal() - _DAYS_SHIFT)")
                return
            if logical in (None, "uuid") and kind in _PRIMITIVES:  # uuid: to_avro made it a string
                schema = kind
            else:
                raise _Unsupported(repr(schema))
        self.primitive(schema, v, depth)

    def primitive(self, kind: str, v: str, depth: int) -> None:
        if kind == "null":
            return
        if kind == "boolean":
            self.emit(depth, f"out.append(1 if {v} else 0)")
        elif kind in ("int", "long"):
            self.emit(depth, f"if 0 <= {v} < 64:")
            self.emit(depth + 1, f"out.append({v} << 1)")
            self.emit(depth, "else:")
            self.emit(depth + 1, f"_long(out, {v})")
        elif kind == "double":
            self.emit(depth, f"out += _double({v})")
        else:  # string, bytes
            raw = f"{v}.encode()" if kind == "string" else v
            self.emit(depth, f"{v} = {raw}")
            self.emit(depth, f"_long(out, len({v}))")
            self.emit(depth, f"out += {v}")

    def union(self, branches: list[Any], v: str, depth: int) -> None:
        if len(branches) != 2 or "null" not in branches:
            raise _Unsupported(repr(branches))
        null = branches.index("null")
        self.emit(depth, f"if {v} is None:")
        self.emit(depth + 1, f"out.append({null << 1})")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"out.append({(1 - null) << 1})")
        self.value(branches[1 - null], v, depth + 1)

    def container(self, schema: dict[str, Any], v: str, depth: int) -> None:
        """One block of all the items, then the end (as fastavro writes them); none: just the end."""
        self.emit(depth, f"if {v}:")
        self.emit(depth + 1, f"_long(out, len({v}))")
        item = self.var()
        if schema["type"] == "array":
            self.emit(depth + 1, f"for {item} in {v}:")
            self.value(schema["items"], item, depth + 2)
        else:
            key = self.var()
            self.emit(depth + 1, f"for {key}, {item} in {v}.items():")
            self.primitive("string", key, depth + 2)
            self.value(schema["values"], item, depth + 2)
        self.emit(depth, "out.append(0)")


def compile_writer(schema: Any) -> Callable[[Any], bytes] | None:
    """A function writing Avro data (as ``to_avro`` gives it) by a parsed or plain ``schema``; None when
    the schema has a part this writer does not cover."""
    source = _Source()
    try:
        source.value(schema, "data", 1)
    except (_Unsupported, KeyError, TypeError):
        return None
    text = "\n".join(["def write(data):", "    out = bytearray()", *source.lines, "    return bytes(out)", ""])
    scope: dict[str, Any] = {"_long": _long, "_micros": _micros, "_DAYS_SHIFT": _DAYS_SHIFT,
                             "_double": struct.Struct("<d").pack, **source.consts}
    exec(compile(text, "<edbus avro writer>", "exec"), scope)
    writer: Callable[[Any], bytes] = scope["write"]
    return writer
