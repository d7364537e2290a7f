"""Pulsar's admin REST API over urllib (no extra dependency): topics, subscriptions, stats, schemas.

Errors map onto edbus's: 404 → ``NotFoundError``, a refused connection → ``StoreUnavailableError``,
anything else → ``StoreError`` with the broker's own reason.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from edbus.errors import NotFoundError, StoreError, StoreUnavailableError

__all__ = ["Admin", "AdminConflict"]


class AdminConflict(StoreError):
    """409 from the broker (already exists, or an incompatible schema); ``reason`` is the broker's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
    except OSError:
        return exc.reason or str(exc.code)
    try:
        found = json.loads(body)
        if isinstance(found, dict) and (found.get("reason") or found.get("message")):
            return str(found.get("reason") or found["message"])
    except ValueError:
        pass
    return body.strip() or str(exc.reason)


class _Busy(Exception):
    pass


class Admin:
    """``base`` is the admin URL (``http://host:8080``); ``namespace`` is ``tenant/namespace``."""

    def __init__(self, base: str, namespace: str, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.namespace = namespace
        self.timeout = timeout

    def topic_path(self, topic: str) -> str:
        return f"/admin/v2/persistent/{self.namespace}/{quote(topic, safe='')}"

    def call(self, method: str, path: str, body: Any = None, *, raw: str | None = None) -> Any:
        """One request; a 412 (another client is changing the same subscription or topic right now,
        e.g. two processes subscribing at once) is retried with backoff for a few seconds."""
        deadline = time.monotonic() + 10
        delay = 0.02
        while True:
            try:
                return self._call(method, path, body, raw)
            except _Busy as exc:
                if time.monotonic() + delay > deadline:
                    raise StoreError(f"Pulsar admin {method} {path}: still busy after 10 s: {exc}") from None
                time.sleep(delay)  # backoff before retrying, not synchronisation
                delay = min(delay * 2, 0.5)

    def _call(self, method: str, path: str, body: Any, raw: str | None) -> Any:
        data = None
        headers = {"Accept": "application/json"}
        if raw is not None:
            data, headers["Content-Type"] = raw.encode(), "application/json"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            reason = _reason(exc)
            if exc.code == 404:
                raise NotFoundError(reason) from None
            if exc.code == 409:
                raise AdminConflict(reason) from None
            if exc.code == 412:
                raise _Busy(reason) from None
            raise StoreError(f"Pulsar admin {method} {path}: HTTP {exc.code}: {reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise StoreUnavailableError(f"Pulsar admin API at {self.base} unreachable: {exc}") from None
        return json.loads(text) if text.strip() else None

    # -- topics ------------------------------------------------------------------------------
    def create_topic(self, topic: str) -> None:
        with contextlib.suppress(AdminConflict):  # exists
            self.call("PUT", self.topic_path(topic))

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
