"""Course catalog propagation: a replica of the course catalog kept from the openedx-events content-authoring
events Studio publishes (``CatalogReplica``), its full rebuild by replay (``rebuild``), and the ``edbus
demo`` that runs it beside a simulated Studio. Built only on edbus's public API; docs/catalog.md."""

from edbus_services.catalog.publisher import SignalPublisher
from edbus_services.catalog.rebuild import RebuildResult, rebuild
from edbus_services.catalog.replica import CatalogReplica, CatalogValidationError
from edbus_services.catalog.service import DemoConfig, DemoService, ServiceFigures, ServiceProcess, ServiceProgress
from edbus_services.catalog.signals import CATALOG_SIGNALS, TOPIC, CatalogSignal, producer_config

__all__ = ["CATALOG_SIGNALS", "TOPIC", "CatalogReplica", "CatalogSignal", "CatalogValidationError", "DemoConfig",
           "DemoService", "RebuildResult", "ServiceFigures", "ServiceProcess", "ServiceProgress", "SignalPublisher",
           "producer_config", "rebuild"]
