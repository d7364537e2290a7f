"""What the backend checks on the broker before its first append or subscribe in a process: broker
deduplication on for the namespace (docs/pulsar.md requires it: without it a publish resent after a
failure is stored twice), and no subscriptions created by the broker on its own.

A namespace policy wins over the broker's setting, which is read only when the namespace has none. On a
secured broker both reads need a tenant admin (namespace policies) or a superuser (broker settings): a
role that may read neither gets a warning saying what could not be checked, not a refusal.
"""

from __future__ import annotations

import logging
from typing import Any

from edbus.backends.pulsar.admin import Admin
from edbus.errors import AuthorizationError, ConfigError

__all__ = ["check_broker"]

log = logging.getLogger("edbus.backends.pulsar")


class _Settings:
    """The broker's runtime settings, read once (None: not allowed to read them)."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self._found: dict[str, Any] | None = None
        self.refused = ""

    def get(self, name: str) -> str | None:
        if self._found is None and not self.refused:
            try:
                found = self.admin.call("GET", "/admin/v2/brokers/configuration/runtime")
                self._found = found if isinstance(found, dict) else {}
            except AuthorizationError as exc:
                self.refused = str(exc)
        return None if self._found is None else self._found.get(name)


def _effective(admin: Admin, settings: _Settings, policy: str, field: str | None,
               setting: str) -> tuple[bool | None, str]:
    """The namespace policy's value (``field`` of it, when it is an object), else the broker's setting;
    with where it comes from. None: not allowed to read either."""
    try:
        found = admin.namespace_policy(policy)
    except AuthorizationError:
        found = None
    if isinstance(found, dict) and field is not None:
        found = found.get(field)
    if isinstance(found, bool):
        return found, f"namespace {admin.namespace} policy {policy}"
    value = settings.get(setting)
    if value is None:
        return None, ""
    return str(value).lower() == "true", f"broker setting {setting}"


def check_broker(admin: Admin, role: str) -> None:
    """``ConfigError`` when deduplication is off; a warning when it cannot be read, or when the broker
    creates subscriptions on its own. ``StoreUnavailableError`` when the admin API is unreachable."""
    ns = admin.namespace
    settings = _Settings(admin)
    dedupe, where = _effective(admin, settings, "deduplication", None, "brokerDeduplicationEnabled")
    if dedupe is False:
        raise ConfigError(
            f"Pulsar broker deduplication is off for namespace {ns} ({where}): edbus needs it (an event resent "
            f"after a failure would be stored twice). Turn it on: pulsar-admin namespaces set-deduplication {ns} "
            "--enable")
    if dedupe is None:
        log.warning("edbus: could not check that Pulsar broker deduplication is on for namespace %s: role %r may "
                    "read neither the namespace's policies nor the broker's settings (a tenant admin can: "
                    "pulsar-admin namespaces get-deduplication %s); without it an event resent after a failure "
                    "is stored twice", ns, role, ns)
    auto, where = _effective(admin, settings, "autoSubscriptionCreation", "allowAutoSubscriptionCreation",
                             "allowAutoSubscriptionCreation")
    if auto:
        log.warning("edbus: Pulsar creates subscriptions on its own for namespace %s (%s): a consumer "
                    "reconnecting after its subscription was deleted brings it back. Turn it off: pulsar-admin "
                    "namespaces set-auto-subscription-creation %s (without --enable), or "
                    "allowAutoSubscriptionCreation=false on the brokers", ns, where, ns)
