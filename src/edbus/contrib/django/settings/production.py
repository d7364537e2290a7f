"""Production settings: as common (Open edX's production settings read ``EDBUS_*`` from the YAML config)."""

from __future__ import annotations

from typing import Any

from edbus.contrib.django.settings import common


def plugin_settings(settings: Any) -> None:
    common.plugin_settings(settings)
