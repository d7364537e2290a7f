"""The edbus Django app, an Open edX plugin app (``lms.djangoapp`` / ``cms.djangoapp`` entry points)."""

from __future__ import annotations

from typing import Any, ClassVar

from django.apps import AppConfig

_SETTINGS = {"common": {"relative_path": "settings.common"},
             "production": {"relative_path": "settings.production"}}


class EdbusConfig(AppConfig):
    """Checks the producer configuration at start-up; provides the edbus management commands."""

    name = "edbus.contrib.django"
    label = "edbus"
    verbose_name = "edbus event bus"
    default_auto_field = "django.db.models.BigAutoField"

    plugin_app: ClassVar[dict[str, Any]] = {
        "settings_config": {
            "lms.djangoapp": _SETTINGS,
            "cms.djangoapp": _SETTINGS,
        },
    }

    def ready(self) -> None:
        from django.conf import settings

        from edbus.contrib.django.checks import check_consumer_config, check_producer_config
        from edbus.contrib.django.settings.common import plugin_settings
        from edbus.openedx.config import setting

        plugin_settings(settings)  # defaults for a service that lists the app without the plugin machinery
        if setting("EDBUS_CHECK_PRODUCER_AT_STARTUP", True):
            check_producer_config()
            check_consumer_config()
