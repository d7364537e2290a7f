"""Derive an Avro schema from a payload class, and compile converters between objects and Avro data.

A payload class is an ``attrs`` class or a dataclass. Supported field types: ``str``, ``int``, ``float``,
``bool``, ``bytes``, ``datetime`` (timestamp-micros), ``date``, ``UUID``, ``Enum`` subclasses, nested
payload classes, ``list[X]`` / ``tuple[X, ...]``, ``dict[str, X]`` and ``X | None``.

Converters are compiled once per class: ``to_avro`` validates while it converts, so a bad payload is
refused with the path of the field at fault before anything is encoded or stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import reprlib
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from edbus.errors import ValidationError

__all__ = ["PayloadCodec", "compile_payload", "is_payload_class", "zero_width_array"]

Convert = Callable[[Any], Any]
_NONE = type(None)


class _Bad(Exception):
    """A validation failure on its way up; each level adds its path segment (cheap: no strings are
    built for valid payloads)."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.path: list[str] = []

    def where(self) -> str:
        text = ""
        for seg in reversed(self.path):
            text += seg if seg.startswith("[") or not text else "." + seg
        return text or "payload"


_REPR = reprlib.Repr()  # Python 3.11's Repr takes no arguments
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def _show(value: Any) -> str:
    """A short repr: bounded for huge or deeply nested values; a raising ``__repr__`` cannot replace
    the validation error."""
    try:
        return _REPR.repr(value)
    except Exception:  # RecursionError, or whatever a hostile __repr__ raises
        return f"<{type(value).__name__} object>"


def _expect(expected: str, value: Any) -> _Bad:
    return _Bad(f"expected {expected}, got {type(value).__name__} {_show(value)}")


def is_payload_class(cls: object) -> bool:
    return isinstance(cls, type) and (attrs.has(cls) or dataclasses.is_dataclass(cls))


def _fields(cls: type) -> list[tuple[str, Any, Any]]:
    """(name, type, default or MISSING) for each init field, in declaration order."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:  # e.g. a class defined in a function, under ``from __future__ import annotations``
        raise ValidationError(f"cannot resolve the field types of {cls.__name__}: {type(exc).__name__}: {exc} "
                              "(define the class at module level)") from None
    out: list[tuple[str, Any, Any]] = []
    if attrs.has(cls):
        for a in attrs.fields(cls):
            if not a.init:
                continue
            default = a.default if a.default is not attrs.NOTHING else dataclasses.MISSING
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = dataclasses.MISSING
            out.append((a.alias or a.name, hints[a.name], default))
        return out
    for f in dataclasses.fields(cls):
        if f.init:
            out.append((f.name, hints[f.name], f.default))
    return out


class PayloadCodec:
    """The Avro schema of a payload class and its compiled converters."""

    __slots__ = ("_busy", "_done", "_root_name", "cls", "from_avro", "schema", "to_avro")

    def __init__(self, cls: type, root_name: str | None = None) -> None:
        """``root_name`` names the top-level record (default: the class name); event types name it
        after themselves so that a reader's payload class may have another name than the writer's."""
        if not is_payload_class(cls):
            raise ValidationError(f"{cls!r} is not an attrs class or a dataclass")
        self.cls = cls
        self._root_name = root_name
        # Named types already defined in this schema: later uses refer to them by name.
        self._done: dict[type, tuple[Convert, Callable[[Any], Any]]] = {}
        self._busy: set[type] = set()
        schema, to_avro, from_avro = self._compile(cls)
        unbounded = zero_width_array(schema)
        if unbounded is not None:
            raise ValidationError(f"{cls.__name__}: {unbounded}")
        self.schema: dict[str, Any] = schema
        self.to_avro: Convert = self._top(to_avro)
        self.from_avro: Callable[[Any], Any] = lambda data: from_avro(data)

    def _top(self, convert: Convert) -> Convert:
        def to_avro(value: Any) -> Any:
            try:
                return convert(value)
            except _Bad as bad:
                raise ValidationError(f"{bad.where()}: {bad.message}") from None

        return to_avro

    # -- compilation ---------------------------------------------------------------------------
    def _compile(self, tp: Any) -> tuple[Any, Convert, Callable[[Any], Any]]:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not _NONE]
            if len(rest) != 1 or len(args) != 2:
                raise ValidationError(f"unsupported union {tp!r}: only 'X | None' is supported")
            schema, inner, back = self._compile(rest[0])

            def opt(value: Any) -> Any:
                return None if value is None else inner(value)

            def opt_back(value: Any) -> Any:
                return None if value is None else back(value)

            return ["null", schema], opt, opt_back
        if origin in (list, tuple, Sequence) or tp in (list, tuple):
            if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                raise ValidationError(f"unsupported tuple {tp!r}: use tuple[X, ...]")
            if not args:
                raise ValidationError(f"{tp!r} needs an item type")
            schema, inner, back = self._compile(args[0])
            make: Callable[[Any], Any] = tuple if origin is tuple else list

            def seq(value: Any) -> Any:
                if not isinstance(value, (list, tuple)):
                    raise _expect("a list", value)
                out = []
                for i, v in enumerate(value):
                    try:
                        out.append(inner(v))
                    except _Bad as bad:
                        bad.path.append(f"[{i}]")
                        raise
                return out

            return {"type": "array", "items": schema}, seq, lambda v: make(back(x) for x in v)
        if origin in (dict, Mapping) or tp is dict:
            if not args or args[0] is not str:
                raise ValidationError(f"unsupported mapping {tp!r}: keys must be str")
            schema, inner, back = self._compile(args[1])

            def mapping(value: Any) -> Any:
                if not isinstance(value, Mapping):
                    raise _expect("a mapping", value)
                out = {}
                for k, v in value.items():
                    if not isinstance(k, str):
                        raise _Bad(f"key {_show(k)} is not a string")
                    try:
                        k = _to_str(k)
                        out[k] = inner(v)
                    except _Bad as bad:
                        bad.path.append(f"[{_show(k)}]")
                        raise
                return out

            return {"type": "map", "values": schema}, mapping, lambda v: {k: back(x) for k, x in v.items()}
        if isinstance(tp, type):
            return self._compile_class(tp)
        raise ValidationError(f"unsupported field type {tp!r}")

    def _compile_class(self, tp: type) -> tuple[Any, Convert, Callable[[Any], Any]]:
        ident: Callable[[Any], Any] = lambda v: v  # noqa: E731
        if tp in _PRIMITIVES:
            schema, check = _PRIMITIVES[tp]
            return schema, check, ident
        if tp is uuid.UUID:
            def to_uuid(value: Any) -> Any:
                if not isinstance(value, uuid.UUID):
                    raise _expect("UUID", value)
                return str(value)
            return {"type": "string", "logicalType": "uuid"}, to_uuid, \
                lambda v: v if isinstance(v, uuid.UUID) else uuid.UUID(v)
        if tp in self._done:
            return (tp.__name__, *self._done[tp])
        if issubclass(tp, enum.Enum):
            return self._compile_enum(tp)
        if is_payload_class(tp):
            if tp in self._busy:
                raise ValidationError(f"recursive record {tp.__name__} is not supported")
            self._busy.add(tp)
            return self._compile_record(tp)
        raise ValidationError(f"unsupported field type {tp.__name__}")

    def _compile_enum(self, tp: type[enum.Enum]) -> tuple[Any, Convert, Callable[[Any], Any]]:
        members = list(tp)

        def to_enum(value: Any) -> Any:
            if not isinstance(value, tp):
                raise _expect(tp.__name__, value)
            return value.name

        def from_enum(value: Any) -> Any:
            return tp[value]

        self._done[tp] = (to_enum, from_enum)
        return {"type": "enum", "name": tp.__name__, "symbols": [m.name for m in members]}, to_enum, from_enum

    def _compile_record(self, tp: type) -> tuple[Any, Convert, Callable[[Any], Any]]:
        cls_name = tp.__name__
        # taken before the fields compile, so that the root name never goes to a nested record
        record_name = self._root_name or cls_name
        self._root_name = None
        fields: list[dict[str, Any]] = []
        steps: list[tuple[str, Convert, Callable[[Any], Any]]] = []
        for name, ftype, default in _fields(tp):
            schema, conv, back = self._compile(ftype)
            field: dict[str, Any] = {"name": name, "type": schema}
            if isinstance(schema, list) and schema[0] == "null":
                field["default"] = None
            elif default is not dataclasses.MISSING and isinstance(default, (str, int, float, bool)):
                field["default"] = default.name if isinstance(default, enum.Enum) else default
            fields.append(field)
            steps.append((name, conv, back))
        to_steps = [(name, conv) for name, conv, _ in steps]
        missing = object()

        def to_record(value: Any) -> Any:
            if not isinstance(value, tp):
                raise _expect(cls_name, value)
            out = {}
            name = ""
            try:
                for name, conv in to_steps:
                    v = getattr(value, name, missing)
                    if v is missing:
                        raise _Bad("missing field")
                    out[name] = conv(v)
            except _Bad as bad:
                bad.path.append(name)
                raise
            return out

        def from_record(data: Any) -> Any:
            return tp(**{name: back(data[name]) for name, _, back in steps})

        self._done[tp] = (to_record, from_record)
        return {"type": "record", "name": record_name, "fields": fields}, to_record, from_record


def _checker(ok: Callable[[Any], bool], expected: str) -> Convert:
    def conv(value: Any) -> Any:
        if ok(value):
            return value
        raise _expect(expected, value)

    return conv


def _to_float(value: Any) -> Any:
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expect("float", value)
    try:
        return float(value)
    except OverflowError:
        raise _Bad(f"int {_show(value)} is out of the range of a double") from None


def _to_str(value: Any) -> Any:
    if type(value) is not str:
        if not isinstance(value, str):
            raise _expect("str", value)
        value = str.__str__(value)  # a plain str: a subclass's overrides never run inside the encoder
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates: Avro strings are UTF-8
            raise _Bad(f"not valid Unicode: {exc.reason} at index {exc.start}") from None
    return value


def _to_int(value: Any) -> Any:
    if (type(value) is int or (isinstance(value, int) and not isinstance(value, bool))) \
            and -(2**63) <= value < 2**63:
        return value
    raise _expect("int (64-bit)", value)


def _to_bool(value: Any) -> Any:
    if value is True or value is False:
        return value
    raise _expect("bool", value)


def _to_datetime(value: Any) -> Any:
    if not isinstance(value, dt.datetime):
        raise _expect("datetime", value)
    if value.tzinfo is None or value.utcoffset() is None:
        # the encoder would take it as UTC: the producer's local time would silently shift
        raise _Bad(f"naive datetime {value.isoformat()}: give it a time zone (e.g. tzinfo=datetime.UTC)")
    if value.year in (1, dt.MAXYEAR):
        try:
            value.astimezone(dt.UTC)
        except OverflowError:  # no reader could decode it
            raise _Bad(f"datetime {value.isoformat()} is out of range in UTC") from None
    return value


_PRIMITIVES: dict[type, tuple[Any, Convert]] = {
    bool: ("boolean", _to_bool),
    int: ("long", _to_int),
    float: ("double", _to_float),
    str: ("string", _to_str),
    bytes: ("bytes", _checker(lambda v: isinstance(v, bytes), "bytes")),
    dt.datetime: ({"type": "long", "logicalType": "timestamp-micros"}, _to_datetime),
    dt.date: ({"type": "int", "logicalType": "date"},
              _checker(lambda v: isinstance(v, dt.date) and not isinstance(v, dt.datetime), "date")),
}


def zero_width_array(schema: Any) -> str | None:
    """Why ``schema`` cannot be decoded with bounded work, or None: an array whose items encode to
    zero bytes (e.g. records without fields) lets a few bytes claim 2**62 items, and the decoder
    would build them all."""
    names: dict[str, Any] = {}

    def zero(s: Any, seen: frozenset[str]) -> bool:
        if isinstance(s, str):
            if s in names and s not in seen:
                return zero(names[s], seen | {s})
            return s == "null"
        if isinstance(s, dict):
            kind = s.get("type")
            if kind == "record":
                return all(zero(f.get("type"), seen) for f in s.get("fields", []))
            if kind == "fixed":
                return s.get("size") == 0
            if isinstance(kind, (str, dict, list)) and kind not in ("array", "map", "enum"):
                return zero(kind, seen)
        return False  # unions, arrays, maps, enums and the other primitives take at least one byte

    def walk(s: Any, where: str) -> str | None:
        if isinstance(s, list):
            return next((found for b in s if (found := walk(b, where)) is not None), None)
        if not isinstance(s, dict):
            return None
        kind = s.get("type")
        if kind in ("record", "enum", "fixed") and isinstance(s.get("name"), str):
            names[s["name"]] = s
        if kind == "record":
            for f in s.get("fields", []):
                found = walk(f.get("type"), f"{where}.{f.get('name')}" if where else str(f.get("name")))
                if found is not None:
                    return found
            return None
        if kind == "array":
            if zero(s.get("items"), frozenset()):
                return (f"{where or 'payload'}: an array whose items encode to zero bytes cannot be "
                        "decoded safely (use items with at least one field)")
            return walk(s.get("items"), f"{where}[]")
        if kind == "map":
            return walk(s.get("values"), f"{where}[]")
        return walk(kind, where) if isinstance(kind, (dict, list)) else None

    return walk(schema, "")


def compile_payload(cls: type) -> PayloadCodec:
    return PayloadCodec(cls)
