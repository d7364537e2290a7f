"""The outbox's Django app: its tables (a migration) and the relay command."""

from __future__ import annotations

from django.apps import AppConfig


class EdbusOutboxConfig(AppConfig):
    name = "edbus.contrib.django_outbox"
    label = "edbus_outbox"
    verbose_name = "edbus transactional outbox"
    default_auto_field = "django.db.models.BigAutoField"
