"""Pulsar's admin REST API over one ``httpx.Client`` per backend and process: topics, subscriptions,
stats, schemas, policies.

Redirects are followed for every method: a broker that does not own a topic answers 307 with the owner's
address, to PUT/POST/DELETE as to GET (urllib followed none of those, so any cluster of more than one
broker failed). Connections are kept. Several admin URLs (``admin=http://h1:8080,http://h2:8080``) are
tried in turn when one refuses connections, the last that answered first: a redirect is enough to reach
a topic's owner, but a dead broker's address must not be the only way in. TLS validates certificate and
hostname against ``tls_ca``; a token goes in the ``Authorization`` header of every request, redirected
ones included (httpx drops it when a redirect changes host or port, as a browser would; a broker's
redirect goes to another broker of the same cluster, which needs it), but never over plain http when the
admin URLs are https.

Errors map onto edbus's: 404 → ``NotFoundError``, a refused connection → ``StoreUnavailableError``,
409 → ``AdminConflict``, 401 or an untrusted certificate → ``AuthenticationError``, 403 →
``AuthorizationError`` naming role and topic, anything else → ``StoreError`` with the broker's reason.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote

import httpx

from edbus.backends.pulsar.backoff import Backoff
from edbus.backends.pulsar.security import Security, untrusted_certificate
from edbus.errors import (
    AuthenticationError,
    AuthorizationError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)

__all__ = ["Admin", "AdminConflict"]

_BUSY_FOR = 10.0  # seconds a 412 ("busy": another client changes the same subscription or topic) is retried


class AdminConflict(StoreError):
    """409 from the broker (already exists, or an incompatible schema); ``reason`` is the broker's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(response: httpx.Response) -> tuple[str, bool]:
    """The broker's reason, in one line, and whether it came from the REST API (``{"reason": ...}``), not
    from the web server's own error page (``{"message": ...}`` or HTML: an authentication filter's
    refusal, a proxy's error)."""
    body = response.text
    try:
        found = json.loads(body)
        if isinstance(found, dict) and (found.get("reason") or found.get("message")):
            return " ".join(str(found.get("reason") or found["message"]).split()), bool(found.get("reason"))
    except ValueError:
        pass
    title = re.search(r"<title>(.*?)</title>", body, re.S | re.I)
    text = title.group(1) if title else body
    return " ".join(text.split())[:300] or response.reason_phrase or str(response.status_code), False


def _resource(path: str) -> str:
    """What an admin path is about, for messages: a topic (``persistent://t/ns/topic``), else the path."""
    parts = path.split("?", 1)[0].split("/")
    if len(parts) >= 7 and parts[1:3] == ["admin", "v2"] and parts[3] in ("persistent", "schemas"):
        return f"persistent://{parts[4]}/{parts[5]}/{unquote(parts[6])}"
    if len(parts) >= 6 and parts[1:4] == ["admin", "v2", "namespaces"]:
        return f"namespace {parts[4]}/{parts[5]}"
    return path


class _Busy(Exception):
    pass


class Admin:
    """``bases``: the admin URL(s) (``http://host:8080``); ``namespace`` is ``tenant/namespace``."""

    def __init__(self, bases: str | Sequence[str], namespace: str, timeout: float = 10.0,
                 security: Security | None = None) -> None:
        self.bases = (bases,) if isinstance(bases, str) else tuple(bases)
        self.bases = tuple(b.rstrip("/") for b in self.bases)
        self.namespace = namespace
        self.timeout = timeout
        self.security = security or Security()
        self._https = any(b.startswith("https:") for b in self.bases)
        self._current = 0  # index of the admin URL that answered last
        self._client: httpx.Client | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._role: str | None = None

    @property
    def base(self) -> str:
        return self.bases[self._current]

    @property
    def role(self) -> str:
        if self._role is None:
            self._role = self.security.role()
        return self._role

    def __repr__(self) -> str:
        return f"Admin({', '.join(self.bases)}, {self.namespace})"

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None or self._pid != os.getpid():  # a pooled connection never crosses a fork
                verify: Any = self.security.ssl_context() if self._https else True
                self._client = httpx.Client(
                    verify=verify, follow_redirects=True, max_redirects=5,
                    timeout=httpx.Timeout(self.timeout, connect=3.0), headers={"Accept": "application/json"},
                    event_hooks={"request": [self._authorize]})
                self._pid = os.getpid()
            return self._client

    def _authorize(self, request: httpx.Request) -> None:
        """Every request, each redirected one included, carries the token (read now: a rotated file
        is picked up) — except plain http when the admin URLs are https."""
        if self.security.has_token and (request.url.scheme == "https" or not self._https):
            request.headers["Authorization"] = f"Bearer {self.security.token()}"

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None

    def topic_path(self, topic: str) -> str:
        return f"/admin/v2/persistent/{self.namespace}/{quote(topic, safe='')}"

    def call(self, method: str, path: str, body: Any = None, *, raw: str | None = None) -> Any:
        """One request; a 412 (another client is changing the same subscription or topic right now,
        e.g. two processes subscribing at once) is retried with backoff for a few seconds."""
        backoff = Backoff(_BUSY_FOR, first=0.02, most=0.5)
        while True:
            try:
                return self._call(method, path, body, raw)
            except _Busy as exc:
                if not backoff.sleep():
                    raise StoreError(f"Pulsar admin {method} {path}: still busy after {_BUSY_FOR:g} s: {exc}") from None

    def _send(self, method: str, path: str, content: bytes | None, headers: dict[str, str]) -> httpx.Response:
        """The request to the admin URL that answered last, else to the others in turn."""
        client = self._http()
        first = self._current
        failures = []
        for step in range(len(self.bases)):
            index = (first + step) % len(self.bases)
            base = self.bases[index]
            try:
                response = client.request(method, base + path, content=content, headers=headers)
            except httpx.ConnectError as exc:
                if untrusted_certificate(exc):
                    trusted = f"tls_ca={self.security.tls_ca}" if self.security.tls_ca else "the system's trust store"
                    raise AuthenticationError(f"Pulsar admin API at {base}: TLS certificate not trusted by "
                                              f"{trusted} ({exc})") from None
                failures.append(f"{base}: {exc}")
                continue
            except httpx.TooManyRedirects:
                raise StoreError(f"Pulsar admin {method} {path}: more than 5 redirects") from None
            except httpx.TransportError as exc:  # the connection broke or timed out mid-request
                raise StoreUnavailableError(f"Pulsar admin API at {base} failed: {type(exc).__name__}: "
                                            f"{exc}") from None
            self._current = index
            return response
        raise StoreUnavailableError(f"Pulsar admin API unreachable: {'; '.join(failures)}")

    def _call(self, method: str, path: str, body: Any, raw: str | None) -> Any:
        content = None
        headers = {}
        if raw is not None:
            content, headers["Content-Type"] = raw.encode(), "application/json"
        elif body is not None:
            content, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        response = self._send(method, path, content, headers)
        code = response.status_code
        if code < 300:
            return json.loads(response.content) if response.content.strip() else None
        reason, from_api = _reason(response)
        if code == 404:
            raise NotFoundError(reason)
        if code == 409:
            raise AdminConflict(reason)
        if code == 412:
            raise _Busy(reason)
        # Pulsar answers 401 both when it does not accept the credentials (its authentication filter's
        # page) and when the authenticated role lacks a permission (the REST API's JSON reason)
        if code == 403 or (code == 401 and from_api):
            what = _resource(path)
            raise AuthorizationError(f"role {self.role!r} is not allowed to {method} {what} (Pulsar admin API: "
                                     f"{reason})", self.role, what)
        if code == 401:
            if not self.security.has_token:
                raise AuthenticationError(f"Pulsar admin API at {self.base} asks for credentials: give "
                                          "token_file=/path or token_env=VAR in the URL")
            raise AuthenticationError(f"Pulsar admin API at {self.base} refused the credentials of role "
                                      f"{self.role!r} ({self.security.token_source}): {reason}")
        raise StoreError(f"Pulsar admin {method} {path}: HTTP {code}: {reason}")

    # -- topics ------------------------------------------------------------------------------
    def create_topic(self, topic: str) -> None:
        """Create it unless it exists. A role that may not create topics (creating one takes a tenant
        admin) may use one an operator created: then only the topic's existence is checked."""
        try:
            self.call("PUT", self.topic_path(topic))
        except AdminConflict:  # exists
            pass
        except AuthorizationError:
            try:
                self.call("GET", self.topic_path(topic) + "/internalStats")
            except (NotFoundError, AuthorizationError):
                raise AuthorizationError(
                    f"role {self.role!r} may not create topic {self.namespace}/{topic}, and it does not exist "
                    "(or the role may not look it up): an operator creates it and grants the role (docs/pulsar.md, "
                    "Authorization)", self.role, f"persistent://{self.namespace}/{topic}") from None

    def list_topics(self) -> list[str]:
        """Short names of the namespace's persistent topics."""
        prefix = f"persistent://{self.namespace}/"
        names = self.call("GET", f"/admin/v2/persistent/{self.namespace}") or []
        return [n[len(prefix):] for n in names if n.startswith(prefix)]

    def stats(self, topic: str) -> dict[str, Any]:
        found = self.call("GET", self.topic_path(topic) + "/stats?getEarliestTimeInBacklog=true")
        return found if isinstance(found, dict) else {}

    def internal_stats(self, topic: str) -> dict[str, Any]:
        found = self.call("GET", self.topic_path(topic) + "/internalStats")
        return found if isinstance(found, dict) else {}

    # -- subscriptions -----------------------------------------------------------------------
    def subscriptions(self, topic: str) -> list[str]:
        try:
            return list(self.call("GET", self.topic_path(topic) + "/subscriptions") or [])
        except NotFoundError:
            return []

    def create_subscription(self, topic: str, sub: str, earliest: bool, properties: dict[str, str]) -> bool:
        """False when it exists already."""
        position = {"ledgerId": -1 if earliest else 2**63 - 1, "entryId": -1 if earliest else 2**63 - 1,
                    "partitionIndex": -1, "properties": properties}
        try:
            self.call("PUT", f"{self.topic_path(topic)}/subscription/{quote(sub, safe='')}", position)
        except AdminConflict:
            return False
        return True

    def delete_subscription(self, topic: str, sub: str) -> None:
        self.call("DELETE", f"{self.topic_path(topic)}/subscription/{quote(sub, safe='')}?force=true")

    def subscription_properties(self, topic: str, sub: str) -> dict[str, str]:
        found = self.call("GET", f"{self.topic_path(topic)}/subscription/{quote(sub, safe='')}/properties")
        return dict(found or {})

    def reset_cursor_time(self, topic: str, sub: str, millis: int) -> None:
        self.call("POST", f"{self.topic_path(topic)}/subscription/{quote(sub, safe='')}/resetcursor/{millis}")

    def reset_cursor_position(self, topic: str, sub: str, ledger: int, entry: int) -> None:
        self.call("POST", f"{self.topic_path(topic)}/subscription/{quote(sub, safe='')}/resetcursor",
                  {"ledgerId": ledger, "entryId": entry, "partitionIndex": -1, "isExcluded": False})

    # -- schemas -----------------------------------------------------------------------------
    def schema_path(self, topic: str) -> str:
        return f"/admin/v2/schemas/{self.namespace}/{quote(topic, safe='')}"

    # -- policies (the backend's checks at start) --------------------------------------------
    def namespace_policy(self, name: str) -> Any:
        """A namespace policy (``deduplication``, ``autoSubscriptionCreation``, ...): None when unset."""
        return self.call("GET", f"/admin/v2/namespaces/{self.namespace}/{name}")

    def broker_setting(self, name: str) -> str | None:
        """A broker's runtime configuration value (superuser only on a secured broker)."""
        found = self.call("GET", "/admin/v2/brokers/configuration/runtime")
        return found.get(name) if isinstance(found, dict) else None
