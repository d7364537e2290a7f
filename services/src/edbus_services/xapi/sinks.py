"""Where Caliper envelopes go: a JSON-lines file, or a Caliper endpoint over HTTP.

Ralph stores xAPI statements only, so the Caliper side of the feed is a separate sink. Both sinks write
one Caliper 1.2 envelope per batch. Delivery is at least once, like the bus: after a crash an envelope
may be written again with the same event ids (``urn:uuid:``, deterministic), which a consumer of the
file or endpoint deduplicates by event id.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from edbus_services.xapi.caliper import caliper_envelope
from edbus_services.xapi.errors import SinkError
from edbus_services.xapi.statements import XapiConfig

__all__ = ["CaliperFileSink", "CaliperHttpSink", "CaliperSink"]


class CaliperSink(Protocol):
    def send(self, events: Sequence[Mapping[str, Any]]) -> list[BaseException | None]: ...


class CaliperFileSink:
    """Appends each envelope as one JSON line to ``path`` and fsyncs it before the events are acked."""

    def __init__(self, path: str | Path, config: XapiConfig) -> None:
        self.path, self.config = Path(path), config
        self._lock = threading.Lock()

    def send(self, events: Sequence[Mapping[str, Any]]) -> list[BaseException | None]:
        line = json.dumps(caliper_envelope(self.config, events), separators=(",", ":")) + "\n"
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            return [SinkError(f"writing Caliper events to {self.path}: {exc}")] * len(events)
        return [None] * len(events)


class CaliperHttpSink:
    """POSTs each envelope to a Caliper endpoint (``Authorization: Bearer <token>`` when a token is given);
    any 2xx is success, anything else is retried (a Caliper endpoint does not say which event is at fault)."""

    def __init__(self, url: str, config: XapiConfig, token: str | None = None, timeout: float = 10.0) -> None:
        self.url, self.config, self.token, self.timeout = url, config, token, timeout

    def send(self, events: Sequence[Mapping[str, Any]]) -> list[BaseException | None]:
        body = json.dumps(caliper_envelope(self.config, events)).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            answer = exc.read().decode("utf-8", "replace")[:1500]
            return [SinkError(f"POST {self.url}: HTTP {exc.code}: {answer}")] * len(events)
        except OSError as exc:
            return [SinkError(f"POST {self.url}: {type(exc).__name__}: {exc}")] * len(events)
        return [None] * len(events)
