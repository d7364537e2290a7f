"""``manage.py produce_event``: send one signal event to the bus (as in the Kafka and Redis implementations)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from edbus.errors import EdbusError
from edbus.openedx.producer import create_producer


class Command(BaseCommand):
    help = """Send one event of an OpenEdxPublicSignal to a topic; prints its id. Example:

    python manage.py lms produce_event --signal openedx_events.learning.signals.SESSION_LOGIN_COMPLETED \\
      --topic user-login --key-field user.pii.username \\
      --data '{"user": {"id": 123, "is_active": true,
               "pii": {"username": "bob", "email": "bob@example.com", "name": "Bob Foo"}}}'
    """

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--signal", required=True, help="Dotted path to an OpenEdxPublicSignal instance")
        parser.add_argument("--topic", required=True, help="Topic (without EVENT_BUS_TOPIC_PREFIX)")
        parser.add_argument("--key-field", required=True, help="Period-delimited path to the event key")
        parser.add_argument("--data", required=True, help="JSON object: the signal's data (kwargs)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            signal = import_string(options["signal"])
        except ImportError as exc:
            raise CommandError(f"--signal: {exc}") from None
        if not hasattr(signal, "init_data") or not hasattr(signal, "event_type"):
            raise CommandError(f"--signal {options['signal']} is not an OpenEdxPublicSignal")
        try:
            raw = json.loads(options["data"])
        except ValueError as exc:
            raise CommandError(f"--data is not JSON: {exc}") from None
        producer = create_producer()
        try:
            data = producer.codec.decode(signal, raw)
            metadata = signal.generate_signal_metadata()
            producer.send(signal=signal, topic=options["topic"], event_key_field=options["key_field"],
                          event_data=data, event_metadata=metadata)
        except EdbusError as exc:
            raise CommandError(str(exc)) from None
        finally:
            producer.prepare_for_shutdown()
        self.stdout.write(str(metadata.id))
