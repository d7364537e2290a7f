from typing import Any

from django.apps import AppConfig

POISON = "Poison"  # a catalog change whose course name contains this makes its receiver raise


class ConsumingServiceConfig(AppConfig):
    name = "tests.openedx.consuming_service"
    label = "consuming_service"

    def ready(self) -> None:
        from tests.openedx.consuming_service.models import ReceivedEvent
        from tests.openedx.signal_data import as_json, metadata_json, serializable_signals

        def record(signal: Any, metadata: Any, from_event_bus: bool = False, **kwargs: Any) -> None:
            data = {k: kwargs[k] for k in signal.init_data}
            ReceivedEvent.objects.create(event_id=str(metadata.id), event_type=signal.event_type,
                                         metadata=metadata_json(metadata), data=as_json(signal, data),
                                         from_event_bus=from_event_bus)
            catalog = kwargs.get("catalog_info")
            if catalog is not None and POISON in catalog.name:
                raise RuntimeError(f"cannot index {catalog.course_key}: search backend refused it")

        for signal in serializable_signals():
            signal.connect(record, dispatch_uid="record-received", weak=False)
