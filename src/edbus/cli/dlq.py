"""``edbus dlq``: list, show, redrive and purge a subscription's dead letters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
from rich.markup import escape

from edbus.backends.base import Message, StartAt, dlq_topic
from edbus.bus.bus import Bus
from edbus.cli.common import CliError, iter_messages, open_bus, require_subscription
from edbus.cli.output import console, echo_json, event_dict, iso_time, table

__all__ = ["dlq"]

_DLQ_PREFIX = "edbus_dlq_"


@click.group(short_help="List, show, redrive and purge dead letters.")
def dlq() -> None:
    """Dead letters: events a subscription gave up on after its retries (or could not decode).

    They wait in the dead-letter topic <topic>.<subscription>.dlq with the error, traceback and attempt
    history; redrive gives them back to the subscription once the cause is fixed.
    """


def _dead_letters(bus: Bus, topic: str, subscription: str) -> tuple[str, list[Message]]:
    stored = bus.topic(topic)
    require_subscription(bus.administration, stored, subscription)
    return stored, list(iter_messages(bus.administration, dlq_topic(stored, subscription), StartAt("earliest")))


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _summary(message: Message) -> dict[str, Any]:
    headers = message.record.headers
    return {
        "id": message.record.id,
        "type": message.record.type,
        "key": message.record.key,
        "attempts": int(headers.get("edbus_dlq_attempts", "0") or 0),
        "error_type": headers.get("edbus_dlq_error_type", ""),
        "error_message": headers.get("edbus_dlq_error_message", ""),
        "dead_lettered_at": iso_time(_float(headers.get("edbus_dlq_at")) or message.published_at),
    }


@dlq.command("list")
@click.argument("topic")
@click.argument("subscription")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_(ctx: click.Context, topic: str, subscription: str, as_json: bool) -> None:
    """List SUBSCRIPTION's dead letters on TOPIC: id, type, key, attempts, error, when."""
    bus = open_bus(ctx)
    stored, messages = _dead_letters(bus, topic, subscription)
    rows = [_summary(m) for m in messages]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        console().print(f"no dead letters for {subscription} on {stored}")
        return
    console().print(table(
        f"{len(rows)} dead letter(s) in {dlq_topic(stored, subscription)}",
        ["id", "type", "key", "attempts", "error type", "message", "dead-lettered at"],
        [(r["id"], r["type"], r["key"] or "", r["attempts"], r["error_type"], _short(r["error_message"]),
          r["dead_lettered_at"]) for r in rows],
        numeric=["attempts"]))


def _short(text: str, width: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _history(headers: dict[str, str]) -> list[dict[str, Any]]:
    try:
        found = json.loads(headers.get("edbus_dlq_history") or "[]")
    except json.JSONDecodeError:
        return []
    return [h for h in found if isinstance(h, dict)] if isinstance(found, list) else []


@dlq.command()
@click.argument("topic")
@click.argument("subscription")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@click.pass_context
def show(ctx: click.Context, topic: str, subscription: str, event_id: str, as_json: bool) -> None:
    """Show one dead letter in full: event, error, attempt history, traceback, headers and data."""
    bus = open_bus(ctx)
    stored, messages = _dead_letters(bus, topic, subscription)
    message = next((m for m in messages if m.record.id == event_id), None)
    if message is None:
        raise CliError(f"no dead letter {event_id!r} for {subscription} on {stored} (edbus dlq list shows them)")
    headers = dict(message.record.headers)
    record = {
        **_summary(message),
        "topic": headers.get("edbus_dlq_topic", stored),
        "subscription": headers.get("edbus_dlq_subscription", subscription),
        "position": headers.get("edbus_dlq_position"),
        "traceback": headers.get("edbus_dlq_traceback", ""),
        "history": _history(headers),
        "headers": {k: v for k, v in headers.items() if not k.startswith(_DLQ_PREFIX)},
        "event": event_dict(message, bus.codec),
    }
    if as_json:
        echo_json(record)
        return
    _print_record(record)


def _print_record(record: dict[str, Any]) -> None:
    out = console()
    event = record["event"]
    out.print(f"[bold]dead letter {escape(record['id'])}[/]")
    fields = [("type", record["type"]), ("key", record["key"] or ""), ("topic", record["topic"]),
              ("subscription", record["subscription"]), ("event time", event.get("time") or ""),
              ("source", event.get("source") or ""), ("attempts", record["attempts"]),
              ("dead-lettered at", record["dead_lettered_at"])]
    for name, value in fields:
        out.print(f"  [cyan]{name:<17}[/]{escape(str(value))}")
    out.print(f"\n[bold red]error[/] {escape(record['error_type'])}: {escape(record['error_message'])}")
    if record["history"]:
        out.print(table("attempt history", ["attempt", "at", "error type", "message"],
                        [(h.get("attempt", ""), iso_time(h.get("at")) if h.get("at") else "", h.get("type", ""),
                          _short(str(h.get("message", "")))) for h in record["history"]],
                        numeric=["attempt"]))
    if record["traceback"]:
        out.print("\n[bold]traceback[/] (of the last attempt)")
        out.print(record["traceback"].rstrip(), markup=False, highlight=False)
    out.print()
    out.print(table("headers", ["header", "value"], sorted(record["headers"].items())))
    out.print("\n[bold]data[/]")
    if event.get("decode_error"):
        out.print(f"  [red]cannot decode:[/] {escape(event['decode_error'])}")
        out.print(f"  payload (base64): {event['payload_base64']}", markup=False)
    else:
        text = json.dumps(event["data"], indent=2, ensure_ascii=False)
        out.print("\n".join("  " + line for line in text.splitlines()), markup=False)


def _selection(ids: Sequence[str], all_: bool, what: str) -> list[str] | None:
    if bool(ids) == all_:
        raise click.UsageError(f"say which dead letters to {what}: --id ID (repeatable) or --all")
    return None if all_ else list(dict.fromkeys(ids))


def _check_ids(stored: str, subscription: str, messages: list[Message], ids: list[str] | None) -> None:
    if ids is None:
        return
    known = {m.record.id for m in messages}
    missing = [i for i in ids if i not in known]
    if missing:
        raise CliError(f"not dead letters of {subscription} on {stored}: {', '.join(missing)} (nothing done)")


@dlq.command()
@click.argument("topic")
@click.argument("subscription")
@click.option("--id", "ids", multiple=True, metavar="ID", help="A dead letter to redrive (repeatable).")
@click.option("--all", "all_", is_flag=True, help="Redrive every dead letter of the subscription.")
@click.pass_context
def redrive(ctx: click.Context, topic: str, subscription: str, ids: tuple[str, ...], all_: bool) -> None:
    """Give dead letters back to SUBSCRIPTION: they are delivered again, with fresh attempts.

    Fix the cause first (the handler, the data, a service that was down), or they come back here.
    """
    selected = _selection(ids, all_, "redrive")
    bus = open_bus(ctx)
    stored, messages = _dead_letters(bus, topic, subscription)
    _check_ids(stored, subscription, messages, selected)
    count = bus.administration.redrive(stored, subscription, selected)
    click.echo(f"redrove {count} dead letter(s) to {subscription} on {stored}")


@dlq.command()
@click.argument("topic")
@click.argument("subscription")
@click.option("--id", "ids", multiple=True, metavar="ID", help="A dead letter to delete (repeatable).")
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter of the subscription.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, topic: str, subscription: str, ids: tuple[str, ...], all_: bool, yes: bool) -> None:
    """Delete dead letters of SUBSCRIPTION for good (asks first unless --yes)."""
    selected = _selection(ids, all_, "purge")
    bus = open_bus(ctx)
    stored, messages = _dead_letters(bus, topic, subscription)
    _check_ids(stored, subscription, messages, selected)
    count = len(messages) if selected is None else len(selected)
    if count == 0:
        click.echo(f"no dead letters for {subscription} on {stored}")
        return
    if not yes:
        click.confirm(f"delete {count} dead letter(s) of {subscription} on {stored} for good?", abort=True)
    deleted = bus.administration.purge_dead_letters(stored, subscription, selected)
    click.echo(f"purged {deleted} dead letter(s) of {subscription} on {stored}")
