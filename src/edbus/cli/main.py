"""``edbus``: the command line of the event bus.

Every command takes the store from the group's ``--url`` (default ``$EDBUS_URL``, else the embedded store
at ``~/.local/share/edbus/edbus.db``). An edbus error is one red ``error: <message>`` line on stderr and
exit code 1; a usage mistake exits 2.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import time
from collections.abc import Iterator
from typing import IO, Any

import click

from edbus.backends.base import Administrable, Record, StartAt, broker_retention, retention_capable
from edbus.cli.common import (
    CliError,
    DurationType,
    StartType,
    State,
    describe_start,
    explain,
    open_bus,
    require_subscription,
)
from edbus.cli.output import console, echo_json, human_age, human_bytes, table
from edbus.errors import EdbusError, ValidationError

__all__ = ["COMMANDS_GROUP", "ELSEWHERE", "cli", "main"]

log = logging.getLogger("edbus.cli")

# click's own exceptions print themselves; a closed stdout (edbus tail t | head) is handled by click
_PASS_THROUGH = (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError)


class EdbusGroup(click.Group):
    """Turns every error into one line and exit code 1 (``--debug`` shows the traceback instead)."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                            list[str]]:
        name = click.utils.make_str(args[0]) if args else None
        if name is not None and name not in self.commands and name in ELSEWHERE:
            raise CliError(ELSEWHERE[name])
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except (EdbusError, OSError, ValueError) as exc:
            if ctx.params.get("debug"):
                raise
            raise CliError(explain(exc)) from exc
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise CliError(f"unexpected {explain(exc)} (run with --debug for the traceback)") from exc


@click.group(cls=EdbusGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--url", metavar="URL", envvar="EDBUS_URL", show_envvar=True,
              help="The store: sqlite:///relative.db or sqlite:////absolute/path.db. "
                   "Default: $EDBUS_URL, else the embedded store at ~/.local/share/edbus/edbus.db.")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of one line.")
@click.version_option(package_name="edbus", prog_name="edbus")
@click.pass_context
def cli(ctx: click.Context, url: str | None, debug: bool) -> None:
    """edbus: the event bus for Open edX services.

    Publish and read events, inspect topics and subscriptions, replay, manage dead letters, run consumers
    and look at schemas. Commands that only read or manage an existing store never create one: a missing
    store is an error.
    """
    ctx.obj = State(url=url or None, debug=debug)


# -- publish -------------------------------------------------------------------------------------------
def _json_lines(stream: IO[str], source: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{source} line {number}: bad JSON: {exc}") from None
        except RecursionError:
            raise CliError(f"{source} line {number}: the JSON is nested too deeply") from None


@cli.command(short_help="Publish events from JSON data; prints their ids.")
@click.argument("topic")
@click.argument("event_type", metavar="TYPE")
@click.option("--data", "data_text", metavar="JSON", help="The event data: one JSON object.")
@click.option("--file", "data_file", type=click.File("r", encoding="utf-8"), metavar="PATH",
              help="Publish many events: one JSON object per line ('-' reads stdin), all stored in one "
                   "transaction (all or none).")
@click.option("--key", help="The event key: events with the same key are delivered in order.")
@click.option("--id", "event_id", metavar="ID",
              help="The event id (default: a new UUID). Publishing again with the same id stores nothing "
                   "new: a retry is idempotent. Only with --data.")
@click.pass_context
def publish(ctx: click.Context, topic: str, event_type: str, data_text: str | None, data_file: IO[str] | None,
            key: str | None, event_id: str | None) -> None:
    """Publish events of TYPE to TOPIC from JSON data; prints each event id.

    The data is encoded against the latest schema registered for TYPE (a producer registers it when it
    first publishes); ISO-8601 strings are accepted for timestamps and dates.

    \b
      edbus publish course-catalog org.openedx.content_authoring.course.catalog_info.changed.v1 \\
          --key course-v1:edX+DemoX+2024 --data '{"catalog_info": {...}}'
      edbus publish course-catalog TYPE --file events.jsonl
    """
    if (data_text is None) == (data_file is None):
        raise click.UsageError("give the data with exactly one of --data or --file")
    if event_id is not None and data_file is not None:
        raise click.UsageError("--id names one event: use it with --data, not --file")
    if data_text is not None:
        try:
            items: list[tuple[int, Any]] = [(0, json.loads(data_text))]
        except json.JSONDecodeError as exc:
            raise CliError(f"--data is not valid JSON: {exc}") from None
        except RecursionError:
            raise CliError("--data: the JSON is nested too deeply") from None
    else:
        assert data_file is not None
        items = list(_json_lines(data_file, getattr(data_file, "name", "--file")))
        if not items:
            raise CliError("--file holds no events")
    bus = open_bus(ctx)
    stored = bus.topic(topic)
    records: list[Record] = []
    for number, data in items:
        where = f"line {number}: " if number else ""
        if not isinstance(data, dict):
            raise CliError(f"{where}the event data must be a JSON object, not {type(data).__name__}")
        try:
            records.append(bus.codec.encode_data(stored, event_type, data, key=key, id=event_id))
        except ValidationError as exc:
            raise CliError(f"{where}{exc}") from None
    for event_id in bus.publish_encoded(topic, records):
        click.echo(event_id)


# -- topics, subscriptions -----------------------------------------------------------------------------
@cli.command(short_help="List topics: events, size, subscriptions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def topics(ctx: click.Context, as_json: bool) -> None:
    """List topics with their events, size and subscriptions (dead-letter topics end in .dlq)."""
    bus = open_bus(ctx)
    found = bus.administration.topics()
    if as_json:
        echo_json([dataclasses.asdict(t) for t in found])
        return
    if not found:
        console().print("no topics")
        return
    console().print(table(None, ["topic", "events", "bytes", "subscriptions"],
                          [(t.topic, t.events, human_bytes(t.bytes), t.subscriptions) for t in found],
                          numeric=["events", "bytes", "subscriptions"]))


@cli.command()
@click.argument("topic", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def subscriptions(ctx: click.Context, topic: str | None, as_json: bool) -> None:
    """List subscriptions (of TOPIC, or all) with their backlog.

    backlog: events not yet acked, in flight included; in flight: leased to a consumer right now;
    dead-lettered: events in the subscription's dead-letter topic; consumers: seen in the last minute.
    """
    bus = open_bus(ctx)
    found = bus.administration.subscriptions(bus.topic(topic) if topic else None)
    if as_json:
        echo_json([dataclasses.asdict(s) for s in found])
        return
    if not found:
        console().print("no subscriptions")
        return
    console().print(table(
        None, ["topic", "subscription", "mode", "backlog", "in flight", "dead-lettered", "oldest unacked",
               "consumers"],
        [(s.topic, s.subscription, s.mode.value, s.backlog, s.in_flight, s.dead_lettered,
          human_age(s.oldest_unacked_age), s.consumers) for s in found],
        numeric=["backlog", "in flight", "dead-lettered", "oldest unacked", "consumers"]))


# -- replay, retention ---------------------------------------------------------------------------------
@cli.command(short_help="Move a subscription's cursor: replay (or skip) events.")
@click.argument("topic")
@click.argument("subscription")
@click.option("--to", "start", type=StartType(), required=True,
              help="earliest, latest, an ISO-8601 time (UTC unless given) or id:<event id>.")
@click.pass_context
def replay(ctx: click.Context, topic: str, subscription: str, start: StartAt) -> None:
    """Move SUBSCRIPTION's cursor on TOPIC: every event from --to on is delivered again.

    Events leased or waiting for a retry are released; --to latest skips the whole backlog.
    """
    bus = open_bus(ctx)
    stored = bus.topic(topic)
    before = _backlog(bus.administration, stored, subscription)
    bus.administration.seek(stored, subscription, start)
    after = _backlog(bus.administration, stored, subscription)
    click.echo(f"moved {subscription} on {stored} to {describe_start(start)}: backlog {before} -> {after}")


@cli.command(short_help="Delete a subscription (its unacked events are no longer held for it).")
@click.argument("topic")
@click.argument("subscription")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def unsubscribe(ctx: click.Context, topic: str, subscription: str, yes: bool) -> None:
    """Delete SUBSCRIPTION on TOPIC with its cursor and unacked state, so that retention no longer keeps
    events for it. Its dead-letter topic stays until purged (edbus dlq purge)."""
    bus = open_bus(ctx)
    stored = bus.topic(topic)
    backlog = _backlog(bus.administration, stored, subscription)
    if not yes:
        click.confirm(f"delete subscription {subscription} on {stored} with {backlog} unacked event(s)?",
                      abort=True)
    bus.administration.unsubscribe(stored, subscription)
    click.echo(f"deleted subscription {subscription} on {stored} ({backlog} unacked event(s) released)")


def _backlog(admin: Administrable, topic: str, subscription: str) -> int:
    require_subscription(admin, topic, subscription)
    return next(s.backlog for s in admin.subscriptions(topic) if s.subscription == subscription)


@cli.command()
@click.option("--older-than", "older_than", type=DurationType(), default="7d", show_default=True,
              help="Delete events appended longer ago than this: 30m, 12h, 7d, 2w (a bare number is seconds).")
@click.pass_context
def retention(ctx: click.Context, older_than: float) -> None:
    """Delete old events that every subscription has acked.

    Events a subscription has not acked yet, and dead-letter topics, are kept (purge dead letters with
    edbus dlq purge). On Pulsar the namespace's retention policy does this: the command says so.
    """
    bus = open_bus(ctx)
    capable = retention_capable(bus.backend)
    if capable is None:  # not a mistake: the broker deletes old events itself, on its own schedule
        click.echo(broker_retention(bus.backend))
        return
    deleted = capable.enforce_retention(time.time() - older_than)
    click.echo(f"deleted {deleted} event(s) older than {older_than:g}s")


# Commands that come with other distributions: the hint a user gets when that distribution is missing.
ELSEWHERE = {
    "demo": "edbus demo comes with edbus-services: pip install ./services (from the edbus repository)",
    "xapi-feed": "edbus xapi-feed comes with edbus-services: pip install ./services (from the edbus repository)",
}
COMMANDS_GROUP = "edbus.commands"  # entry points: click commands other distributions add to `edbus`


def _register() -> None:
    from edbus.cli.consume import consume
    from edbus.cli.dashboard import dashboard
    from edbus.cli.dlq import dlq
    from edbus.cli.exporter import exporter
    from edbus.cli.outbox import outbox
    from edbus.cli.schema import schema
    from edbus.cli.tail import tail

    for command in (tail, consume, dlq, schema, outbox, exporter, dashboard):
        cli.add_command(command)
    for entry in importlib.metadata.entry_points(group=COMMANDS_GROUP):
        if entry.name not in cli.commands:  # a plugin never replaces a command of edbus's own
            cli.add_command(_plugin_command(entry), entry.name)


def _plugin_command(entry: importlib.metadata.EntryPoint) -> click.Command:
    """The click command ``entry`` names; one that does not load becomes a command that says why in one line
    when run, so a broken plugin never breaks the other commands."""
    try:
        command = entry.load()
        if not isinstance(command, click.Command):
            raise TypeError(f"{entry.value} is a {type(command).__name__}, not a click command")
        return command
    except Exception as exc:
        dist = entry.dist.name if entry.dist is not None else "its distribution"
        reason = f"edbus {entry.name} ({entry.value}, from {dist}) does not load: {type(exc).__name__}: {exc}"
        log.warning("%s", reason)

        @click.command(entry.name, short_help=f"(does not load: {type(exc).__name__})",
                       context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                         "help_option_names": []})
        def broken() -> None:
            raise CliError(reason)

        return broken


_register()


def main() -> None:
    """The console script."""
    cli.main(prog_name="edbus")


if __name__ == "__main__":
    main()
