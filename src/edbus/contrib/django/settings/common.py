"""Default settings of the edbus app; a service's own values win."""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    # .. setting_name: EDBUS_URL
    # .. setting_default: None
    # .. setting_description: The store of the event bus: ``sqlite:////absolute/path.db`` for the embedded
    #   store (every process of every service on the machine that produces or consumes must use the same
    #   file), ``pulsar://host:6650`` once the Pulsar backend exists. None: ``$EDBUS_URL``, else
    #   ``~/.local/share/edbus/edbus.db``.
    "EDBUS_URL": None,
    # .. setting_name: EDBUS_SOURCE
    # .. setting_default: "openedx"
    # .. setting_description: The CloudEvents ``source`` of events published through edbus's own API
    #   (events sent through openedx-events keep the ``source`` of their ``EventsMetadata``).
    "EDBUS_SOURCE": "openedx",
    # .. setting_name: EDBUS_CONSUMER_HANDLER_TIMEOUT
    # .. setting_default: None
    # .. setting_description: Seconds a receiver may run before its event is released for retry; a
    #   receiver whose thread cannot be freed makes consume_events exit with status 75 (None: no limit).
    "EDBUS_CONSUMER_HANDLER_TIMEOUT": None,
    # .. setting_name: EDBUS_CONSUMER_HEALTH_PORT
    # .. setting_default: None
    # .. setting_description: Port where consume_events serves /healthz and /readyz (None: no probes).
    "EDBUS_CONSUMER_HEALTH_PORT": None,
    # .. setting_name: EDBUS_CONSUMER_METRICS_PORT
    # .. setting_default: None
    # .. setting_description: Port where consume_events serves Prometheus metrics (needs edbus[metrics]).
    "EDBUS_CONSUMER_METRICS_PORT": None,
    # .. setting_name: EDBUS_CONSUMER_STALL_AFTER
    # .. setting_default: 60.0
    # .. setting_description: Seconds without a turn of the consumer's loop before /healthz fails.
    "EDBUS_CONSUMER_STALL_AFTER": 60.0,
    # .. setting_name: EDBUS_LOG_FAILED_PAYLOADS
    # .. setting_default: False
    # .. setting_description: Whether a failed send logs the event's data and the error's message (they
    #   may hold personal data); by default only its id, type, topic and metadata.
    "EDBUS_LOG_FAILED_PAYLOADS": False,
    # .. setting_name: EDBUS_RETENTION_SECONDS
    # .. setting_default: 604800 (7 days)
    # .. setting_description: How long an event that every subscription has acknowledged is kept (for
    #   replay); None keeps events forever. Events a subscription has not acknowledged are never deleted;
    #   on a topic with no subscription yet, events older than this are (create subscriptions first).
    "EDBUS_RETENTION_SECONDS": 7 * 24 * 3600.0,
    # .. setting_name: EDBUS_CHECK_PRODUCER_AT_STARTUP
    # .. setting_default: True
    # .. setting_description: When the app is ready, load ``EVENT_BUS_PRODUCER`` and check
    #   ``EVENT_BUS_PRODUCER_CONFIG`` (known signals, valid topics, key fields that exist in the signal's
    #   data) and raise ``ImproperlyConfigured`` on a mistake, instead of dropping events with a warning.
    "EDBUS_CHECK_PRODUCER_AT_STARTUP": True,
    # .. setting_name: EDBUS_CONSUMER_MODE
    # .. setting_default: "key_ordered"
    # .. setting_description: Subscription mode of ``consume_events``: ``key_ordered`` (per-key order,
    #   keys spread over consumer processes), ``shared`` (no order) or ``exclusive`` (one active consumer,
    #   total order). ``--extra '{"mode": ...}'`` overrides it.
    "EDBUS_CONSUMER_MODE": "key_ordered",
    # .. setting_name: EDBUS_CONSUMER_CONCURRENCY
    # .. setting_default: 1
    # .. setting_description: Receiver threads per consumer process (events of one key never run in
    #   parallel). 1 behaves like the Kafka and Redis consumers; raise it for I/O-bound receivers.
    "EDBUS_CONSUMER_CONCURRENCY": 1,
    # .. setting_name: EDBUS_CONSUMER_MAX_ATTEMPTS
    # .. setting_default: 5
    # .. setting_description: Deliveries of an event whose receiver raises before it goes to the
    #   dead-letter topic ``<topic>.<group>.dlq``.
    "EDBUS_CONSUMER_MAX_ATTEMPTS": 5,
    # .. setting_name: EDBUS_CONSUMER_BACKOFF_BASE
    # .. setting_default: 0.5
    # .. setting_description: Seconds before the first retry; each retry waits twice as long (with jitter).
    "EDBUS_CONSUMER_BACKOFF_BASE": 0.5,
    # .. setting_name: EDBUS_CONSUMER_BACKOFF_MAX
    # .. setting_default: 300
    # .. setting_description: The longest wait between retries, in seconds.
    "EDBUS_CONSUMER_BACKOFF_MAX": 300.0,
    # .. setting_name: EDBUS_CONSUMER_START
    # .. setting_default: "earliest"
    # .. setting_description: Where a new subscription starts: ``earliest``, ``latest``, an ISO-8601 time
    #   or ``id:<event id>`` (an existing subscription keeps its cursor).
    "EDBUS_CONSUMER_START": "earliest",
}


def plugin_settings(settings: Any) -> None:
    """Set every ``EDBUS_*`` default the service has not set itself."""
    for name, value in DEFAULTS.items():
        if not hasattr(settings, name):
            setattr(settings, name, value)
