"""Printing: rich consoles, tables, events, and JSON that survives Avro values (times, bytes, decimals)."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import os
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edbus.backends.base import Message
from edbus.errors import DecodeError
from edbus.events.codec import Codec

__all__ = ["console", "dump_json", "echo_json", "event_dict", "human_age", "human_bytes", "iso_time", "jsonable",
           "print_event", "table"]

_WIDE = 1000  # when stdout is not a terminal (a pipe, a file): wrap nothing, tables as wide as they need


def console(*, stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr), created on demand so tests can capture it."""
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty() and "COLUMNS" not in os.environ:
        width = _WIDE
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def jsonable(value: Any) -> Any:
    """Avro data as JSON values: times and dates in ISO-8601, bytes in base64, decimals and UUIDs as strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    return value


def dump_json(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(jsonable(value), indent=indent, ensure_ascii=False)


def echo_json(value: Any, *, indent: int | None = 2) -> None:
    """Plain JSON on stdout (no markup, no colour): for scripts."""
    sys.stdout.write(dump_json(value, indent=indent) + "\n")
    sys.stdout.flush()


def iso_time(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          *, numeric: Iterable[str] = (), whole: Iterable[str] = ("id",)) -> Table:
    """A table; ``numeric`` columns are right-aligned, ``whole`` ones (ids) are never folded."""
    right, keep = set(numeric), set(whole)
    cells = [[str(cell) for cell in row] for row in rows]
    out = Table(title=title, title_justify="left", header_style="bold")
    for i, name in enumerate(columns):
        longest = max((len(row[i]) for row in cells), default=0)
        out.add_column(name, justify="right" if name in right else "left", overflow="fold",
                       min_width=longest if name in keep else None, no_wrap=name in keep)
    for row in cells:
        out.add_row(*(escape(cell) for cell in row))
    return out


def event_dict(message: Message, codec: Codec) -> dict[str, Any]:
    """One stored event as a plain dict: envelope, key, where it is, and its data (decoded, or why not)."""
    record = message.record
    out: dict[str, Any] = {
        "id": record.id,
        "type": record.type,
        "key": record.key,
        "topic": message.topic,
        "position": message.position,
        "published_at": iso_time(message.published_at),
    }
    try:
        envelope, data = codec.decode_dict(message)
    except DecodeError as exc:
        out.update(time=record.headers.get("ce_time"), source=record.headers.get("ce_source"),
                   schemaversion=record.headers.get("ce_schemaversion"), data=None,
                   decode_error=str(exc), payload_base64=base64.b64encode(record.payload).decode("ascii"))
        return out
    out.update(time=envelope.time.isoformat(), source=envelope.source, schemaversion=envelope.schemaversion,
               data=jsonable(data))
    if envelope.traceparent:
        out["traceparent"] = envelope.traceparent
    return out


def print_event(out: Console, event: Mapping[str, Any]) -> None:
    """A readable event: one header line, then its data as indented JSON."""
    key = "" if event.get("key") is None else f"  [cyan]key[/]={escape(str(event['key']))}"
    out.print(f"[bold]{escape(str(event.get('time') or event['published_at']))}[/]  "
              f"[green]{escape(event['type'])}[/]{key}  [dim]id={escape(event['id'])}[/]")
    if event.get("decode_error"):
        out.print(f"  [red]cannot decode:[/] {escape(event['decode_error'])}")
        return
    text = json.dumps(event.get("data"), indent=2, ensure_ascii=False)
    out.print("\n".join("  " + line for line in text.splitlines()), markup=False)
