"""The openedx-events event bus interface on edbus.

Settings of an Open edX service::

    EVENT_BUS_PRODUCER = "edbus.openedx.create_producer"
    EVENT_BUS_CONSUMER = "edbus.openedx.EdbusConsumer"
    EDBUS_URL = "sqlite:////openedx/data/edbus/edbus.db"

Needs the ``openedx`` extra (``pip install edbus[openedx]``). ``SignalCodec`` encodes a signal's data into
the records ``EdbusProducer`` stores (openedx-events' own Avro bytes and headers) and decodes them, without
Django: for services that publish or read these events on a ``Bus`` of their own.
"""

from edbus.openedx.consumer import ConsumerFatalError, EdbusConsumer, ReceiverError
from edbus.openedx.producer import EdbusProducer, create_producer
from edbus.openedx.serialization import SignalCodec

__all__ = ["ConsumerFatalError", "EdbusConsumer", "EdbusProducer", "ReceiverError", "SignalCodec", "create_producer"]
