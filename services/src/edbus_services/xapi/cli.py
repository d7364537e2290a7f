"""``python -m edbus_services.xapi``: run the xAPI feed (the command ``edbus xapi-feed`` would wrap)."""

from __future__ import annotations

import logging
import os
import sys

import click

from edbus.errors import EdbusError
from edbus_services.xapi import run_feed
from edbus_services.xapi.feed import DEFAULT_TOPICS

__all__ = ["xapi_feed"]


@click.command("xapi-feed")
@click.option("--url", envvar="EDBUS_URL", default=None, help="The bus (default $EDBUS_URL, else the embedded store).")
@click.option("--lrs", "lrs_url", envvar="EDBUS_LRS_URL", required=True,
              help="The LRS's xAPI endpoint, e.g. http://127.0.0.1:8100/xAPI/ ($EDBUS_LRS_URL).")
@click.option("--lrs-user", envvar="EDBUS_LRS_USER", required=True, help="HTTP Basic user ($EDBUS_LRS_USER).")
@click.option("--lms-url", envvar="LMS_ROOT_URL", default="https://lms.example.com", show_default=True,
              help="The LMS root URL: base of actor home pages and activity ids ($LMS_ROOT_URL).")
@click.option("--topic", "topics", multiple=True,
              help=f"A topic to consume (repeat; default {', '.join(DEFAULT_TOPICS)}).")
@click.option("--subscription", default="xapi-feed", show_default=True)
@click.option("--batch", "batch_size", default=100, show_default=True, help="Statements per POST.")
@click.option("--caliper-file", type=click.Path(dir_okay=False), help="Append Caliper 1.2 envelopes to this file.")
@click.option("--caliper-url", help="POST Caliper 1.2 envelopes to this endpoint.")
@click.option("--idle-timeout", type=float, help="Stop after this many seconds without events.")
@click.pass_context
def xapi_feed(ctx: click.Context, url: str | None, lrs_url: str, lrs_user: str, lms_url: str, topics: tuple[str, ...],
              subscription: str, batch_size: int, caliper_file: str | None, caliper_url: str | None,
              idle_timeout: float | None) -> None:
    """Feed openedx-events learning events to an xAPI LRS (password: $EDBUS_LRS_PASSWORD)."""
    url = url or getattr(ctx.obj, "url", None)  # as `edbus --url URL xapi-feed`
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    password = os.environ.get("EDBUS_LRS_PASSWORD")
    if password is None:
        raise click.UsageError("set EDBUS_LRS_PASSWORD to the LRS password (never on the command line)")
    try:
        report = run_feed(url, lrs_url, (lrs_user, password), lms_url=lms_url, topics=topics or DEFAULT_TOPICS,
                          subscription=subscription, batch_size=batch_size, caliper_file=caliper_file,
                          caliper_url=caliper_url, idle_timeout=idle_timeout)
    except (EdbusError, OSError) as exc:
        click.echo(f"xapi-feed: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"xapi-feed: {report.events} event(s), {report.statements} statement(s) in {report.batches} "
               f"batch(es), {report.caliper_events} Caliper event(s)")
