"""``manage.py edbus_outbox_relay``: ``edbus outbox relay`` on this service's database and bus."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Publish the outbox's rows to the bus until stopped (one active relay per shard; run a standby too)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default="default", help="The Django database alias holding the outbox.")
        parser.add_argument("--shards", type=int, default=1)
        parser.add_argument("--shard", type=int, default=0)
        parser.add_argument("--batch", type=int, default=1000)
        parser.add_argument("--poll", type=float, default=0.05)
        parser.add_argument("--lease-ttl", type=float, default=10.0)
        parser.add_argument("--keep-sent", type=float, default=3600.0)
        parser.add_argument("--until-idle", action="store_true", help="Exit once no row is pending.")

    def handle(self, *args: Any, **options: Any) -> None:
        import click

        from edbus.cli.main import cli
        from edbus.contrib.django_outbox.engine import sqlalchemy_url
        from edbus.openedx.config import setting

        url = setting("EDBUS_URL")
        db = sqlalchemy_url(options["database"]).render_as_string(hide_password=False)
        argv = [*(["--url", url] if url else []), "outbox", "relay", "--db", db, "--shards", str(options["shards"]),
                "--shard", str(options["shard"]),
                "--batch", str(options["batch"]), "--poll", str(options["poll"]),
                "--lease-ttl", str(options["lease_ttl"]), "--keep-sent", str(options["keep_sent"]),
                *(["--until-idle"] if options["until_idle"] else [])]
        try:
            cli.main(argv, prog_name="manage.py edbus_outbox_relay", standalone_mode=False)
        except click.ClickException as exc:
            raise CommandError(exc.format_message(), returncode=exc.exit_code) from None
