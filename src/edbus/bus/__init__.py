"""The bus: publishing, the consumer runtime and middleware."""

from edbus.bus.bus import Bus
from edbus.bus.consumer import Consumer, EventHandler
from edbus.bus.metrics import Metrics
from edbus.bus.middleware import Ack, DeadLetter, Middleware, Outcome, Retry
from edbus.bus.retries import Backoff, Retries
from edbus.bus.tracing import Tracing, current_traceparent

__all__ = ["Ack", "Backoff", "Bus", "Consumer", "DeadLetter", "EventHandler", "Metrics", "Middleware",
           "Outcome", "Retries", "Retry", "Tracing", "current_traceparent"]
