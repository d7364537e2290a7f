"""Backends: the contract (``base``) and its implementations, chosen by URL."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from edbus.backends.base import (
    Administrable,
    Backend,
    Delivery,
    ErrorInfo,
    Message,
    Mode,
    Record,
    RetentionCapable,
    StartAt,
    SubscriptionStats,
    TopicStats,
    dlq_topic,
)
from edbus.errors import ConfigError

__all__ = ["Administrable", "Backend", "Delivery", "ErrorInfo", "Message", "Mode", "Record", "RetentionCapable",
           "StartAt", "SubscriptionStats", "TopicStats", "default_url", "dlq_topic", "open_backend"]


def default_url() -> str:
    """``$EDBUS_URL``, else the embedded store at its default path."""
    from edbus.backends.sqlite import default_path

    return os.environ.get("EDBUS_URL") or f"sqlite:///{default_path()}"


def open_backend(url: str | None = None, *, create: bool = True) -> Backend:
    """``sqlite:///path`` (absolute: ``sqlite:////abs/path``, or relative ``sqlite:///rel.db``; option
    ``?synchronous=full|normal``, docs/operations.md), or
    ``pulsar://host:6650?admin=http://host:8080&tenant=public&namespace=default&prefix=&producer=``, or
    ``pulsar+ssl://h1:6651,h2:6651?admin=https://h1:8443,https://h2:8443&tls_ca=ca.pem&token_file=token``
    (docs/pulsar.md)."""
    url = url or default_url()
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from edbus.backends.sqlite import SqliteBackend

        return SqliteBackend.from_url(url, create=create)
    if parts.scheme in ("pulsar", "pulsar+ssl"):
        try:
            import pulsar  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"{parts.scheme}:// needs the Pulsar client: pip install 'edbus[pulsar]' "
                              f"({exc})") from None
        from edbus.backends.pulsar import PulsarBackend

        return PulsarBackend(url)
    raise ConfigError(f"bad URL {url!r}: the scheme must be sqlite://, pulsar:// or pulsar+ssl://")
