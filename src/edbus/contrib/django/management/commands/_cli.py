"""Run an ``edbus`` CLI command on the service's store, with ``EVENT_BUS_TOPIC_PREFIX`` applied."""

from __future__ import annotations

from collections.abc import Sequence

from edbus.cli.main import cli
from edbus.openedx.config import setting, topic_prefix


def run_cli(prog: str, before: Sequence[str], topic: str, after: Sequence[str]) -> None:
    """``edbus [--url EDBUS_URL] <before> <prefix+topic> <after>``; exits as the CLI does (0, 1 or 2)."""
    url = setting("EDBUS_URL")
    args = [*(["--url", url] if url else []), *before, topic_prefix() + topic, *after]
    cli.main(args, prog_name=prog)
