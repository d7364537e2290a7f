"""``edbus schema``: the registered event types, their schema versions, and topic compatibility rules."""

from __future__ import annotations

import json
from typing import Any

import click

from edbus.cli.common import open_bus
from edbus.cli.output import console, echo_json, iso_time, table
from edbus.errors import NotFoundError
from edbus.schema import DEFAULT_RULE, Rule, parse_rule

__all__ = ["schema"]


@click.group(short_help="Event types, schema versions and compatibility rules.")
def schema() -> None:
    """Event types and their Avro schema versions, and each topic's compatibility rule.

    A producer registers its event type's schema the first time it publishes; a new version must follow
    the topic's compatibility rule (default FORWARD: add optional fields only).
    """


@schema.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the registered event types with their schema versions."""
    registry = open_bus(ctx).registry
    rows: list[dict[str, Any]] = []
    for name in registry.event_types():
        versions = registry.versions(name)
        rows.append({"event_type": name, "versions": [v.version for v in versions],
                     "latest": versions[-1].version if versions else None,
                     "registered_at": iso_time(versions[-1].registered_at) if versions else None})
    if as_json:
        echo_json(rows)
        return
    if not rows:
        console().print("no event types registered")
        return
    console().print(table(None, ["event type", "versions", "latest", "latest registered at"],
                          [(r["event_type"], ", ".join(map(str, r["versions"])), r["latest"], r["registered_at"])
                           for r in rows], numeric=["latest"]))


@schema.command()
@click.argument("event_type", metavar="TYPE")
@click.option("--version", "-v", "version", type=click.IntRange(min=1), help="A schema version (default: the latest).")
@click.pass_context
def show(ctx: click.Context, event_type: str, version: int | None) -> None:
    """Print the Avro schema (JSON) of TYPE."""
    registry = open_bus(ctx).registry
    if version is None:
        versions = registry.versions(event_type)
        if not versions:
            raise NotFoundError(f"unknown event type {event_type!r} (edbus schema list shows them)")
        found = versions[-1].schema
    else:
        found = registry.get(event_type, version)
    click.echo(json.dumps(found, indent=2))


@schema.command()
@click.argument("topic")
@click.argument("rule", required=False, metavar="[RULE]")
@click.pass_context
def rule(ctx: click.Context, topic: str, rule: str | None) -> None:
    """Show TOPIC's compatibility rule, or set it to RULE.

    \b
    Rules: NONE, BACKWARD, FORWARD, FULL and their *_TRANSITIVE forms.
      BACKWARD  the new schema reads data written with the previous one (consumers upgrade first)
      FORWARD   the previous schema reads data written with the new one (producers upgrade first;
                the default, what openedx-events follows: add optional fields only)
      FULL      both; *_TRANSITIVE checks every earlier version, not only the latest
    Setting a rule creates the store if there is none yet.
    """
    new = None if rule is None else parse_rule(rule)
    bus = open_bus(ctx, create=new is not None)
    stored = bus.topic(topic)
    if new is None:
        current: Rule = bus.registry.rule(stored)
        suffix = " (the default)" if current is DEFAULT_RULE else ""
        click.echo(f"{stored}: {current.value}{suffix}")
        return
    bus.registry.set_rule(stored, new)
    click.echo(f"{stored}: {new.value}")
