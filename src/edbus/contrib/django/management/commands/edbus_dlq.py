"""``manage.py edbus_dlq list|show|redrive|purge -t TOPIC -g GROUP``: dead letters (``edbus dlq``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from edbus.contrib.django.management.commands._cli import run_cli


class Command(BaseCommand):
    help = ("Dead letters of a consumer group: list them, show one (error, traceback, attempts), redrive them "
            "to the group once the cause is fixed, or purge them.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "show", "redrive", "purge"])
        parser.add_argument("-t", "--topic", required=True, help="Topic (without EVENT_BUS_TOPIC_PREFIX)")
        parser.add_argument("-g", "--group_id", required=True, help="Consumer group (subscription)")
        parser.add_argument("--id", dest="ids", action="append", default=[], metavar="ID",
                            help="A dead letter's event id (show: exactly one; redrive/purge: repeatable)")
        parser.add_argument("--all", dest="all_", action="store_true", help="redrive/purge: every dead letter")
        parser.add_argument("--json", action="store_true", help="list/show: print JSON")
        parser.add_argument("--yes", action="store_true", help="purge: do not ask for confirmation")

    def handle(self, *args: Any, **options: Any) -> None:
        action, ids = options["action"], options["ids"]
        after: list[str] = [options["group_id"]]
        if action == "show":
            if len(ids) != 1:
                raise CommandError("show takes exactly one --id")
            after.append(ids[0])
        elif action in ("redrive", "purge"):
            after += [a for i in ids for a in ("--id", i)] + (["--all"] if options["all_"] else [])
        if options["json"] and action in ("list", "show"):
            after.append("--json")
        if options["yes"] and action == "purge":
            after.append("--yes")
        run_cli("manage.py edbus_dlq", ["dlq", action], options["topic"], after)
