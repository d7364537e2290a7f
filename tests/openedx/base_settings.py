"""What both test services share. Each runs in its own process with its own SQLite database
(``SERVICE_DB``); both use the event bus store at ``EDBUS_URL`` (an embedded store or a Pulsar broker:
tests/openedx/services.py)."""

from __future__ import annotations

import os

SECRET_KEY = "edbus-tests-only"
USE_TZ = True
DEBUG = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["SERVICE_DB"]}}
EDBUS_URL = os.environ["EDBUS_URL"]
EVENT_BUS_TOPIC_PREFIX = os.environ.get("EVENT_BUS_TOPIC_PREFIX", "test")
EVENT_BUS_PRODUCER = "edbus.openedx.create_producer"
EVENT_BUS_CONSUMER = "edbus.openedx.EdbusConsumer"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"edbus": {"handlers": ["stderr"], "level": "INFO"},
                "openedx_events": {"handlers": ["stderr"], "level": "WARNING"}},
}
TOPIC = "all-signals"
