"""Run an ``edbus`` CLI command on the service's store, with ``EVENT_BUS_TOPIC_PREFIX`` applied."""

from __future__ import annotations

from collections.abc import Sequence

import click
from django.core.management.base import CommandError

from edbus.cli.main import cli
from edbus.openedx.config import setting, topic_prefix


def run_cli(prog: str, before: Sequence[str], topic: str, after: Sequence[str]) -> None:
    """``edbus [--url EDBUS_URL] <before> <prefix+topic> <after>``; a CLI error becomes a ``CommandError``
    with the CLI's message and exit code (1, or 2 for usage errors), so ``call_command`` can run it too."""
    url = setting("EDBUS_URL")
    args = [*(["--url", url] if url else []), *before, topic_prefix() + topic, *after]
    try:
        cli.main(args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        if exc.exit_code:
            raise CommandError(f"exit code {exc.exit_code}", returncode=exc.exit_code) from None
    except click.ClickException as exc:
        raise CommandError(exc.format_message(), returncode=exc.exit_code) from None
    except click.Abort:
        raise CommandError("aborted") from None
