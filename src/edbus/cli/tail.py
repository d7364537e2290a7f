"""``edbus tail``: print a topic's events, and follow new ones."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import click

from edbus.backends.base import StartAt
from edbus.cli.common import StartType, describe_start, open_bus, resolve_topic, topic_exists
from edbus.cli.output import console, dump_json, event_dict, print_event
from edbus.errors import NotFoundError

__all__ = ["interruptible", "tail"]

_WAIT = 1.0  # longest sleep between reads when following; appends wake the reader at once
_BATCH = 500


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, and either ends the block quietly (the command then exits 0)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@click.command()
@click.argument("topic")
@click.option("--from", "start", type=StartType(), default="earliest", show_default=True,
              help="Where to start: earliest, latest (only events published from now on), an ISO-8601 time "
                   "(UTC unless given) or id:<event id>.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new events as they are published, until Ctrl-C or SIGTERM.")
@click.option("--limit", "-n", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per event and line (JSON Lines).")
@click.pass_context
def tail(ctx: click.Context, topic: str, start: StartAt, follow: bool, limit: int | None, as_json: bool) -> None:
    """Print the events of TOPIC: time, type, key, id and data.

    Reads without a subscription: nothing is acked and no consumer is affected. Dead-letter topics
    (<topic>.<subscription>.dlq) can be read too; edbus dlq shows why each event is there.

    \b
      edbus tail course-catalog --limit 10
      edbus tail course-catalog --from latest -f
      edbus tail course-catalog --from 2024-05-01T12:00 --json | jq .data
    """
    bus = open_bus(ctx)
    backend = bus.backend
    stored = resolve_topic(bus, topic)
    admin = bus.administration
    if not follow and not topic_exists(admin, stored):
        raise NotFoundError(f"no topic {stored!r} (edbus topics lists them)")
    origin = describe_start(start)
    if start.where == "latest" and follow:
        origin = "now on"
        # "latest" names no position that stays put; "from now on" does, and catches the events that
        # arrive while we wait.
        start = StartAt("time", time=time.time())
    out = console()
    shown = 0
    after: str | None = None
    with interruptible():
        if follow:
            backend.wait(0)  # listen for wake-ups before the first read: none is lost in between
            console(stderr=True).print(f"following {stored} from {origin} (Ctrl-C stops)",
                                       markup=False)
        while limit is None or shown < limit:
            size = _BATCH if limit is None else min(_BATCH, limit - shown)
            messages = admin.read(stored, start, size, after)
            for message in messages:
                event = event_dict(message, bus.codec)
                if as_json:
                    click.echo(dump_json(event))
                else:
                    print_event(out, event)
                out.file.flush()
            shown += len(messages)
            if messages:
                after = messages[-1].position
            elif follow:
                backend.wait(_WAIT)
            else:
                break
    if not shown and not as_json and not follow:
        console(stderr=True).print(f"no events in {stored} from {start.where}")
