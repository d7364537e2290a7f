"""What every command shares: the command-line state, opening the store, errors and option types."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from edbus.backends.base import Administrable, Message, StartAt
from edbus.bus.bus import Bus, check_topic
from edbus.errors import ConfigError, EdbusError, NotFoundError, redact

__all__ = ["CliError", "DurationType", "StartType", "State", "describe_start", "explain", "iso_utc",
           "iter_messages", "open_bus", "require_subscription", "resolve_topic", "topic_exists"]


@dataclasses.dataclass
class State:
    """The group's options, handed to every command through ``ctx.obj``."""

    url: str | None = None
    debug: bool = False


class CliError(click.ClickException):
    """A fatal error: one red ``error: <message>`` line on stderr, exit code 1; credentials the message
    quotes (a database URL's password, a token) are masked (``edbus.errors.redact``)."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(redact(" ".join(message.split())) or "failed")

    def show(self, file: Any = None) -> None:
        click.secho(f"error: {self.format_message()}", fg="red", err=True)


def open_bus(ctx: click.Context, *, create: bool = False) -> Bus:
    """The bus on the group's ``--url``, closed when the command ends.

    ``create=False`` (every command but setting a schema rule): a missing store is an error, never
    silently created empty.
    """
    state = ctx.find_object(State) or State()
    return ctx.with_resource(Bus.from_url(state.url, create=create))


def resolve_topic(bus: Bus, name: str) -> str:
    """A topic name as stored: the bus prefix, and dead-letter topics (``<topic>.<sub>.dlq``) allowed."""
    if name.endswith(".dlq"):
        check_topic(name[: -len(".dlq")])
        return bus.topic_prefix + name
    return bus.topic(name)


def topic_exists(admin: Administrable, topic: str) -> bool:
    return any(t.topic == topic for t in admin.topics())


def require_subscription(admin: Administrable, topic: str, subscription: str) -> None:
    if not any(s.subscription == subscription for s in admin.subscriptions(topic)):
        raise NotFoundError(f"no subscription {subscription!r} on topic {topic!r} "
                            "(edbus subscriptions lists them)")


def iter_messages(admin: Administrable, topic: str, start: StartAt, *, limit: int | None = None,
                  batch: int = 500) -> Iterator[Message]:
    """Every message of a topic from ``start`` (paged; at most ``limit``)."""
    after: str | None = None
    seen = 0
    while limit is None or seen < limit:
        messages = admin.read(topic, start, batch if limit is None else min(batch, limit - seen), after)
        if not messages:
            return
        yield from messages
        seen += len(messages)
        after = messages[-1].position


if TYPE_CHECKING:  # click >= 8.4 makes ParamType generic; older ones cannot be subscripted at run time
    _StartBase = click.ParamType[StartAt]
    _DurationBase = click.ParamType[float]
else:
    _StartBase = _DurationBase = click.ParamType


class StartType(_StartBase):
    """``earliest``, ``latest``, an ISO-8601 time (UTC unless it says otherwise) or ``id:<event id>``."""

    name = "POSITION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> StartAt:
        if isinstance(value, StartAt):
            return value
        try:
            return StartAt.parse(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


class DurationType(_DurationBase):
    """``30s``, ``30m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds); returns seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        found = _DURATION.match(str(value))
        if found is None:
            self.fail(f"bad duration {value!r}: use a number with s, m, h, d or w (e.g. 7d, 12h, 30m)",
                      param, ctx)
        return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def describe_start(start: StartAt) -> str:
    if start.where == "time" and start.time is not None:
        return f"the first event at or after {iso_utc(start.time)}"
    if start.where == "event":
        return f"event {start.event_id}"
    return "the earliest event" if start.where == "earliest" else "the end of the topic"


def iso_utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def explain(exc: BaseException) -> str:
    """One line for an error nobody planned for (a foreign library's message may quote a URL: redacted)."""
    if isinstance(exc, EdbusError):
        return str(exc)
    text = redact(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
