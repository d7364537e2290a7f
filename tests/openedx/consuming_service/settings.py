"""A consuming service (think: course discovery): receivers record every event they get."""

from __future__ import annotations

import os

from tests.openedx.base_settings import *  # noqa: F403

INSTALLED_APPS = ["openedx_events", "edbus.contrib.django", "tests.openedx.consuming_service"]
EVENT_BUS_PRODUCER_CONFIG: dict[str, object] = {}

if os.environ.get("BAD_CONSUMER"):  # the start-up check must refuse this
    EVENT_BUS_CONSUMER = os.environ["BAD_CONSUMER"]
