"""A producing service (think: the LMS or Studio): every serializable signal goes to one topic."""

from __future__ import annotations

import os

from tests.openedx.base_settings import *  # noqa: F403
from tests.openedx.base_settings import TOPIC

INSTALLED_APPS = ["openedx_events", "edbus.contrib.django", "tests.openedx.producing_service"]


def _producer_config() -> dict[str, dict[str, dict[str, object]]]:
    from tests.openedx.signal_data import key_field, serializable_signals

    return {s.event_type: {TOPIC: {"event_key_field": key_field(s), "enabled": True}}
            for s in serializable_signals()}


EVENT_BUS_PRODUCER_CONFIG = _producer_config()
if os.environ.get("BAD_KEY_FIELD"):  # the start-up check must refuse this
    EVENT_BUS_PRODUCER_CONFIG["org.openedx.content_authoring.course.catalog_info.changed.v1"][TOPIC][
        "event_key_field"] = os.environ["BAD_KEY_FIELD"]
if os.environ.get("BAD_PRODUCER"):
    EVENT_BUS_PRODUCER = os.environ["BAD_PRODUCER"]
