"""Send every serializable signal once (``send_event``: the path a real service takes), recording each
event's metadata and data as this service's receivers see them."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tests.openedx.producing_service.models import SentEvent
from tests.openedx.signal_data import as_json, metadata_json, serializable_signals, signal_data


class Command(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rounds", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        signals = serializable_signals()

        def record(signal: Any, metadata: Any, **kwargs: Any) -> None:
            data = {k: kwargs[k] for k in signal.init_data}
            SentEvent.objects.create(event_id=str(metadata.id), event_type=signal.event_type,
                                     metadata=metadata_json(metadata), data=as_json(signal, data))

        for signal in signals:
            signal.connect(record, dispatch_uid="record-sent")
        for n in range(options["rounds"]):
            for signal in signals:
                responses = signal.send_event(**signal_data(signal, n + 1))
                failed = [r for _, r in responses if isinstance(r, Exception)]
                if failed:
                    raise failed[0]
        self.stdout.write(f"sent {options['rounds'] * len(signals)}")
