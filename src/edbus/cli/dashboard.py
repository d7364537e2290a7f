"""``edbus dashboard``: the operator's web page, served by edbus itself."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from edbus.bus.bus import Bus
from edbus.cli.common import CliError, State

__all__ = ["dashboard"]


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"cannot read --admin-token-file {path}: {exc.strerror or exc}") from None
    if len(token) < 16:
        raise CliError(f"--admin-token-file {path}: the token must be at least 16 characters")
    return token


@click.command(short_help="Serve the operator dashboard (topics, lag, dead letters, schemas) in the browser.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="The port to serve on.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="The address to listen on (127.0.0.1: this machine only).")
@click.option("--admin-token-file", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="A file holding the admin token (16+ characters). Without it the dashboard is read-only; "
                   "with it, redrive, purge, republish and replay need the token, entered once in the page.")
@click.option("--sample-every", type=click.FloatRange(min=0.2), default=10.0, show_default=True, metavar="SECONDS",
              help="How often the dashboard samples every subscription's backlog for its charts.")
@click.pass_context
def dashboard(ctx: click.Context, port: int, address: str, admin_token_file: Path | None,
              sample_every: float) -> None:
    """Serve the dashboard at http://ADDRESS:PORT/ until Ctrl-C: topics, subscriptions with lag and a backlog
    chart, dead letters (browse, redrive, purge, republish), the schema registry and replay.

    Every change is logged on stderr with who asked (the name given with the token, and the address).
    """
    try:
        import uvicorn

        from edbus.dashboard.app import DashboardSettings, create_app
    except ImportError as exc:
        raise CliError(f"the dashboard needs its extra: pip install 'edbus[dashboard]' ({exc})") from None
    state = ctx.find_object(State) or State()
    token = _read_token(admin_token_file) if admin_token_file is not None else None
    settings = DashboardSettings(url=state.url, admin_token=token, sample_every=sample_every)
    bus = Bus.from_url(state.url, create=False)  # a missing store: one error line here, not in the server
    app = create_app(settings, bus)
    logger = logging.getLogger("edbus")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    mode = "admin (changes need the token)" if token else "read-only"
    click.echo(f"edbus dashboard on http://{address}:{port}/ ({mode})", err=True)
    uvicorn.run(app, host=address, port=port, log_level="warning")
