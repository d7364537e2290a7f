"""``edbus outbox relay|status``: move a service database's outbox to the bus; show its depth."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import click

from edbus.cli.common import CliError, open_bus
from edbus.cli.output import console, echo_json
from edbus.cli.tail import interruptible
from edbus.errors import redact

__all__ = ["outbox"]

_DB = click.option("--db", "db_url", required=True, envvar="EDBUS_OUTBOX_DB", show_envvar=True, metavar="URL",
                   help="The service database holding the outbox, as a SQLAlchemy URL "
                        "(postgresql+psycopg://…, mysql+pymysql://…, sqlite:///…).")


@contextlib.contextmanager
def _database(db_url: str) -> Iterator[None]:
    """The outbox database's errors as one line that names the database without its password."""
    import sqlalchemy as sa

    try:
        yield
    except sa.exc.ArgumentError as exc:  # not a URL, or an unknown dialect or driver
        raise CliError(f"bad --db URL (not shown: it may hold a password): {exc}") from None
    except sa.exc.DBAPIError as exc:  # unreachable, refused credentials, missing tables...
        raise CliError(f"outbox database {redact(db_url)}: {type(exc.orig).__name__}: {exc.orig}") from None


@click.group(short_help="The transactional outbox: relay its rows to the bus, show its depth.")
def outbox() -> None:
    """The transactional outbox in a service's own database (docs/outbox.md)."""


@outbox.command(short_help="Publish outbox rows to the bus until stopped (SIGTERM or Ctrl-C).")
@_DB
@click.option("--shards", default=1, show_default=True, type=click.IntRange(1, 1024),
              help="Split the outbox by key over this many relays (the same number for all of them).")
@click.option("--shard", default=0, show_default=True, type=click.IntRange(0, 1023),
              help="This relay's shard, 0 … shards-1: one active relay per shard (a lease), others stand by.")
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(1, 10000), help="Rows per bus write.")
@click.option("--poll", default=0.05, show_default=True, type=click.FloatRange(0.001, 60), help="Idle poll (s).")
@click.option("--lease-ttl", default=10.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Seconds a dead relay's lease blocks a standby.")
@click.option("--keep-sent", default=3600.0, show_default=True, type=click.FloatRange(0),
              help="Seconds a published row is kept before it is purged.")
@click.option("--create-tables", is_flag=True, help="Create the outbox tables if missing.")
@click.option("--until-idle", is_flag=True, help="Exit once no row is pending (for a cron job or a drain).")
@click.pass_context
def relay(ctx: click.Context, db_url: str, shards: int, shard: int, batch: int, poll: float, lease_ttl: float,
          keep_sent: float, create_tables: bool, until_idle: bool) -> None:
    """Move outbox rows to the bus in commit order per key, under a lease; a standby takes over."""
    import sqlalchemy as sa

    from edbus.outbox.relay import Relay
    from edbus.outbox.tables import create_tables as create

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with _database(db_url):
        engine = sa.create_engine(db_url, pool_pre_ping=True)
        ctx.call_on_close(engine.dispose)
        if create_tables:
            create(engine)
        bus = open_bus(ctx)
        r = Relay(engine, bus, shard=shard, shards=shards, batch=batch, poll=poll, lease_ttl=lease_ttl,
                  keep_sent=keep_sent)
        console().print(f"edbus outbox relay {r.name}: shard {shard} of {shards}", highlight=False)
        with interruptible():
            r.run(until_idle=until_idle)


@outbox.command(short_help="Pending rows and the age of the oldest one.")
@_DB
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(db_url: str, as_json: bool) -> None:
    """Depth of the outbox (rows not yet published) and the age of the oldest pending row."""
    import sqlalchemy as sa

    from edbus.outbox.relay import outbox_status

    with _database(db_url):
        engine = sa.create_engine(db_url)
        try:
            s = outbox_status(engine)
        finally:
            engine.dispose()
    if as_json:
        echo_json({"pending": s.pending, "oldest_pending_age": s.oldest_pending_age, "sent": s.sent})
        return
    age = "-" if s.oldest_pending_age is None else f"{s.oldest_pending_age:.1f}s"
    console().print(f"pending {s.pending}  oldest pending {age}  sent (not yet purged) {s.sent}", highlight=False)
