"""The openedx-events event bus interface on edbus.

Settings of an Open edX service::

    EVENT_BUS_PRODUCER = "edbus.openedx.create_producer"
    EVENT_BUS_CONSUMER = "edbus.openedx.EdbusConsumer"
    EDBUS_URL = "sqlite:////openedx/data/edbus/edbus.db"

Needs the ``openedx`` extra (``pip install edbus[openedx]``).
"""

from edbus.openedx.consumer import ConsumerFatalError, EdbusConsumer, ReceiverError
from edbus.openedx.producer import EdbusProducer, create_producer

__all__ = ["ConsumerFatalError", "EdbusConsumer", "EdbusProducer", "ReceiverError", "create_producer"]
