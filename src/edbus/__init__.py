"""edbus: the event bus for Open edX services (OEP-52), on Apache Pulsar or an embedded durable store."""

from edbus.backends.base import Mode, StartAt
from edbus.bus import Backoff, Bus, Consumer, Middleware, Retries
from edbus.errors import EdbusError, PermanentError
from edbus.events import Envelope, Event, EventType
from edbus.schema import Rule

__version__ = "0.1.0"

__all__ = ["Backoff", "Bus", "Consumer", "EdbusError", "Envelope", "Event", "EventType", "Middleware", "Mode",
           "PermanentError", "Retries", "Rule", "StartAt", "__version__"]
