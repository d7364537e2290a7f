"""The ``pulsar://`` URL, and the Pulsar client: created lazily in the process that uses it (a client
never crosses a ``fork()``), its exceptions mapped onto edbus's, closed explicitly."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edbus.errors import ConfigError, NotFoundError, StoreError, StoreUnavailableError

__all__ = ["PulsarConfig", "ClientHolder", "pulsar_errors"]

_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True, slots=True)
class PulsarConfig:
    """``pulsar://host:6650?admin=http://host:8080&tenant=public&namespace=default&prefix=dev-``

    ``prefix`` is prepended to every topic name (environments, or tests, sharing a namespace);
    ``publish_timeout`` is how long an append keeps retrying while the broker is unreachable;
    ``producer`` names this process's producers (one live process per name: the broker refuses a
    second), so that a process started in place of a dead one is recognised by the broker's
    deduplication: a retried publish that carries its first ``sequence`` is not stored twice."""

    service_url: str
    admin_url: str
    tenant: str = "public"
    namespace: str = "default"
    prefix: str = ""
    publish_timeout: float = 30.0
    producer: str = ""

    @classmethod
    def parse(cls, url: str) -> PulsarConfig:
        parts = urlsplit(url)
        if parts.scheme != "pulsar" or not parts.hostname:
            raise ConfigError(f"bad URL {url!r}: use pulsar://host:6650")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"admin", "tenant", "namespace", "prefix", "publish_timeout", "producer"}
        if unknown:
            raise ConfigError(f"bad URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
        port = parts.port or 6650
        try:
            timeout = float(query.get("publish_timeout", 30.0))
        except ValueError:
            raise ConfigError(f"bad URL {url!r}: publish_timeout must be seconds") from None
        producer = query.get("producer", "")
        if producer and (len(producer) > 100 or not _NAME.fullmatch(producer)):
            raise ConfigError(f"bad URL {url!r}: producer names use letters, digits, '.', '-' and '_'")
        return cls(service_url=f"pulsar://{parts.hostname}:{port}",
                   admin_url=query.get("admin", f"http://{parts.hostname}:8080"),
                   tenant=query.get("tenant", "public"), namespace=query.get("namespace", "default"),
                   prefix=query.get("prefix", ""), publish_timeout=timeout, producer=producer)

    @property
    def ns(self) -> str:
        return f"{self.tenant}/{self.namespace}"

    def full(self, short: str) -> str:
        return f"persistent://{self.ns}/{short}"


def _is_pulsar_error(exc: BaseException) -> bool:
    return type(exc).__module__ in ("_pulsar", "pulsar") or any(
        c.__name__ == "PulsarException" for c in type(exc).__mro__)


@contextlib.contextmanager
def pulsar_errors(what: str) -> Iterator[None]:
    """Map the client's exceptions (``PulsarException`` may be a ``BaseException``) to ``StoreError``."""
    try:
        yield
    except (StoreError, NotFoundError, ConfigError):
        raise
    except BaseException as exc:
        if not _is_pulsar_error(exc):
            raise
        name = type(exc).__name__
        if name in ("ConnectError", "Timeout", "AlreadyClosed", "ServiceUnitNotReady", "LookupError"):
            raise StoreUnavailableError(f"{what}: Pulsar {name}: {exc}") from None
        if name in ("TopicNotFound", "SubscriptionNotFound"):
            raise NotFoundError(f"{what}: {exc}") from None
        raise StoreError(f"{what}: Pulsar {name}: {exc}") from None


class ClientHolder:
    """One ``pulsar.Client`` per process: recreated (never reused) after a fork."""

    def __init__(self, config: PulsarConfig) -> None:
        self.config = config
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def fresh(self) -> bool:
        """True when there is no client for this process yet (everything built on one is gone)."""
        return self._client is None or self._pid != os.getpid()

    def get(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                import pulsar

                with pulsar_errors("connect"):
                    self._client = pulsar.Client(self.config.service_url, operation_timeout_seconds=10,
                                                 connection_timeout_ms=3000,
                                                 logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
                self._pid = os.getpid()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                with contextlib.suppress(BaseException):
                    self._client.close()
            self._client = None
