"""``manage.py edbus_replay -t TOPIC -g GROUP --to WHERE``: move a subscription's cursor (``edbus replay``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from edbus.contrib.django.management.commands._cli import run_cli


class Command(BaseCommand):
    help = ("Move a consumer group's cursor: its events from WHERE on are delivered again (running consumers "
            "pick the change up; no restart). WHERE: earliest, latest, an ISO-8601 time or id:<event id>.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-t", "--topic", required=True, help="Topic (without EVENT_BUS_TOPIC_PREFIX)")
        parser.add_argument("-g", "--group_id", required=True, help="Consumer group (subscription)")
        parser.add_argument("--to", required=True, help="earliest | latest | ISO-8601 time | id:<event id>")

    def handle(self, *args: Any, **options: Any) -> None:
        run_cli("manage.py edbus_replay", ["replay"], options["topic"], [options["group_id"], "--to", options["to"]])
