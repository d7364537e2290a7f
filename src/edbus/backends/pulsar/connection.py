"""The ``pulsar://`` / ``pulsar+ssl://`` URL, and the Pulsar client: created lazily in the process that
uses it (a client never crosses a ``fork()``), its exceptions mapped onto edbus's, closed explicitly."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edbus.backends.pulsar.security import Security, tls_probe
from edbus.errors import (
    AuthenticationError,
    AuthorizationError,
    ConfigError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)

__all__ = ["ClientHolder", "PulsarConfig", "pulsar_errors", "split_hosts"]

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_OPTIONS = {"admin", "tenant", "namespace", "prefix", "publish_timeout", "producer", "tls_ca", "token_file",
            "token_env"}
# options that would put a secret in the URL text (which is logged and shown): refused, with the way out
_SECRET_OPTIONS = {"token", "auth", "auth_params", "authparams", "password", "passwd", "secret", "jwt",
                   "credentials", "key", "private_key", "api_key"}
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}")
_HOST = re.compile(r"\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<p6>\d+))?|(?P<host>[^:\[\]]+)(?::(?P<port>\d+))?")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """``h1:6650,h2:6651,[::1]:6650`` -> [(host, port), ...]; ``ValueError`` when malformed."""
    out = []
    for part in netloc.split(","):
        found = _HOST.fullmatch(part.strip())
        if found is None:
            raise ValueError(part)
        host = found["v6"] or found["host"]
        port = int(found["p6"] or found["port"] or default_port)
        if not 0 < port < 65536:
            raise ValueError(part)
        out.append((host, port))
    return out


def _join(scheme: str, hosts: list[tuple[str, int]]) -> str:
    return f"{scheme}://" + ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)


def _refuse_secrets(url: str) -> None:
    """A secret in a URL ends up in logs, process lists and error messages: refuse it, without
    repeating the URL."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ConfigError("bad Pulsar URL: credentials before '@' are refused (URLs are logged); "
                          "use token_file=/path or token_env=VAR")
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name.lower() in _SECRET_OPTIONS:
            raise ConfigError(f"bad Pulsar URL: option {name!r} would put a secret in the URL (URLs are "
                              "logged); use token_file=/path or token_env=VAR")
        for value in values:
            if _JWT.search(value) or "@" in urlsplit(value).netloc:
                raise ConfigError(f"bad Pulsar URL: option {name!r} holds what looks like a token or "
                                  "credentials (URLs are logged); use token_file=/path or token_env=VAR")


@dataclasses.dataclass(frozen=True, slots=True)
class PulsarConfig:
    """``pulsar://host:6650?admin=http://host:8080&tenant=public&namespace=default&prefix=dev-``

    Several brokers: ``pulsar://h1:6650,h2:6650`` (the client tries them in turn) and
    ``admin=http://h1:8080,http://h2:8080`` (the admin client uses the first that answers, and follows a
    broker's redirect to the topic's owner); the default admin list is every service host on 8080.
    Secured: ``pulsar+ssl://h1:6651,h2:6651?tls_ca=/path/ca.pem&token_file=/path`` (or ``token_env=VAR``),
    admin ``https://host:8443`` by default; hostnames are validated. A token is never given in the URL.

    ``prefix`` is prepended to every topic name (environments, or tests, sharing a namespace);
    ``publish_timeout`` is how long an append keeps retrying while the broker is unreachable;
    ``producer`` names this process's producers (one live process per name: the broker refuses a
    second), so that a process started in place of a dead one is recognised by the broker's
    deduplication: a retried publish that carries its first ``sequence`` is not stored twice."""

    service_url: str
    admin_urls: tuple[str, ...]
    tenant: str = "public"
    namespace: str = "default"
    prefix: str = ""
    publish_timeout: float = 30.0
    producer: str = ""
    security: Security = dataclasses.field(default_factory=Security)

    @classmethod
    def parse(cls, url: str) -> PulsarConfig:
        _refuse_secrets(url)
        parts = urlsplit(url)
        if parts.scheme not in ("pulsar", "pulsar+ssl") or not parts.netloc:
            raise ConfigError(f"bad URL {url!r}: use pulsar://host:6650 or pulsar+ssl://host:6651")
        tls = parts.scheme == "pulsar+ssl"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - _OPTIONS
        if unknown:
            # not the URL: an unknown option's value may be a secret under a name we cannot guess (authToken=)
            raise ConfigError(f"bad Pulsar URL: unknown option(s) {', '.join(sorted(unknown))} (known: "
                              f"{', '.join(sorted(_OPTIONS))})")
        try:
            hosts = split_hosts(parts.netloc, 6651 if tls else 6650)
        except ValueError as exc:
            raise ConfigError(f"bad URL {url!r}: bad host {exc}: use host:port[,host:port...]") from None
        try:
            timeout = float(query.get("publish_timeout", 30.0))
        except ValueError:
            raise ConfigError(f"bad URL {url!r}: publish_timeout must be seconds") from None
        producer = query.get("producer", "")
        if producer and (len(producer) > 100 or not _NAME.fullmatch(producer)):
            raise ConfigError(f"bad URL {url!r}: producer names use letters, digits, '.', '-' and '_'")
        security = cls._security(url, tls, query)
        web = "https" if tls else "http"
        admin_urls = tuple(a.strip().rstrip("/") for a in query["admin"].split(",")) if query.get("admin") else \
            tuple(f"{web}://[{h}]:{8443 if tls else 8080}" if ":" in h else f"{web}://{h}:{8443 if tls else 8080}"
                  for h, _ in hosts)
        for admin in admin_urls:
            scheme = urlsplit(admin).scheme
            if scheme not in ("http", "https") or not urlsplit(admin).hostname:
                raise ConfigError(f"bad URL {url!r}: admin URLs are http(s)://host:port, comma-separated")
            if tls and scheme != "https":
                raise ConfigError(f"bad URL {url!r}: with pulsar+ssl:// the admin API is https:// (the token and "
                                  "the data would travel in clear)")
        return cls(service_url=_join(parts.scheme, hosts), admin_urls=admin_urls,
                   tenant=query.get("tenant", "public"), namespace=query.get("namespace", "default"),
                   prefix=query.get("prefix", ""), publish_timeout=timeout, producer=producer, security=security)

    @staticmethod
    def _security(url: str, tls: bool, query: dict[str, str]) -> Security:
        tls_ca, token_file, token_env = query.get("tls_ca", ""), query.get("token_file", ""), query.get("token_env", "")
        if tls_ca and not tls and not any(a.startswith("https:") for a in query.get("admin", "").split(",")):
            raise ConfigError(f"bad URL {url!r}: tls_ca is for pulsar+ssl:// (or an https:// admin URL)")
        # these two name the URL without repeating it: a token given in place of a name would be shown
        if token_file and token_env:
            raise ConfigError("bad Pulsar URL: give token_file or token_env, not both")
        if token_env and not _ENV.fullmatch(token_env):
            raise ConfigError("bad Pulsar URL: token_env names an environment variable (letters, digits and '_'), "
                              "not the token itself")
        return Security(tls=tls, tls_ca=tls_ca, token_file=token_file, token_env=token_env)

    @property
    def admin_url(self) -> str:
        """The first admin URL (the one tried first)."""
        return self.admin_urls[0]

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return split_hosts(self.service_url.split("://", 1)[1], 6650)

    @property
    def ns(self) -> str:
        return f"{self.tenant}/{self.namespace}"

    def full(self, short: str) -> str:
        return f"persistent://{self.ns}/{short}"


def _is_pulsar_error(exc: BaseException) -> bool:
    return type(exc).__module__ in ("_pulsar", "pulsar") or any(
        c.__name__ == "PulsarException" for c in type(exc).__mro__)


@contextlib.contextmanager
def pulsar_errors(what: str, role: str | None = None) -> Iterator[None]:
    """Map the client's exceptions (``PulsarException`` may be a ``BaseException``) to edbus's;
    ``role``: the connection's role, named in an authorization refusal."""
    try:
        yield
    except (StoreError, NotFoundError, ConfigError, AuthenticationError, AuthorizationError):
        raise
    except BaseException as exc:
        if not _is_pulsar_error(exc):
            raise
        name = type(exc).__name__
        if name in ("ConnectError", "Timeout", "AlreadyClosed", "ServiceUnitNotReady", "LookupError"):
            raise StoreUnavailableError(f"{what}: Pulsar {name}: {exc}") from None
        if name in ("TopicNotFound", "SubscriptionNotFound"):
            raise NotFoundError(f"{what}: {exc}") from None
        if name == "AuthenticationError":
            raise AuthenticationError(f"{what}: the broker refused the credentials"
                                      f"{f' of role {role!r}' if role else ''} (wrong or expired token?)") from None
        if name == "AuthorizationError":
            who = f"role {role!r}" if role else "this connection's role"
            raise AuthorizationError(f"{what}: refused to {who} (Pulsar AuthorizationError: the role "
                                     "lacks the permission; an operator grants it, docs/pulsar.md)",
                                     role or "", what) from None
        raise StoreError(f"{what}: Pulsar {name}: {exc}") from None


class ClientHolder:
    """One ``pulsar.Client`` per process: recreated (never reused) after a fork."""

    def __init__(self, config: PulsarConfig) -> None:
        self.config = config
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()
        self._role: str | None = None

    @property
    def role(self) -> str:
        """The role the connection authenticates as (the token's subject), for messages."""
        if self._role is None:
            self._role = self.config.security.role()
        return self._role

    def get(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                import pulsar

                security = self.config.security
                options: dict[str, Any] = {}
                if security.tls:
                    tls_probe(security, self.config.hosts)  # an untrusted certificate: one line, not a retry loop
                    options.update(tls_validate_hostname=True, tls_allow_insecure_connection=False,
                                   tls_trust_certs_file_path=security.tls_ca or None)
                if security.has_token:
                    security.token()  # a missing token is a ConfigError now, not a failed handshake later
                    # a supplier, not the token: read at each (re)connection, never held here
                    options["authentication"] = pulsar.AuthenticationToken(security.token_or_empty)
                with pulsar_errors("connect", self.role if security.has_token else None):
                    # no operation of the client outlasts an append's deadline by much (10 s at most)
                    timeout = int(max(1, min(10, self.config.publish_timeout)))
                    self._client = pulsar.Client(self.config.service_url, operation_timeout_seconds=timeout,
                                                 connection_timeout_ms=3000,
                                                 logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error), **options)
                self._pid = os.getpid()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                with contextlib.suppress(BaseException):
                    self._client.close()
            self._client = None
