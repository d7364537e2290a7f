"""A small xAPI 1.0.3 LRS client: POST a batch of statements, PUT one, read them back.

Standard library ``urllib`` only: one request per batch of up to a few hundred statements, so connection
reuse hardly matters, and the feed adds no HTTP dependency to edbus.

What the answers mean for the feed (xAPI 1.0.3, Communication 2.1):

- 200/204: stored (Ralph answers 204 when every statement of a POST was already stored, identical).
- 409 to a PUT: a statement with that id exists: it was stored by an earlier delivery — success.
- 409 or another permanent 4xx to a POST of several statements: the LRS refused the whole batch (a POST
  is atomic), so each statement is sent again alone with PUT to find the one at fault.
- 4xx to one statement (400, 413, 422...): ``LrsRejectedError`` with the LRS's answer: dead letter.
- 401, 403, 408, 429, 5xx, connection errors and timeouts: ``LrsUnavailableError``: retried with backoff.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from edbus.errors import ConfigError
from edbus_services.xapi.errors import LrsRejectedError, LrsUnavailableError

__all__ = ["LrsClient", "LrsConfig"]

XAPI_VERSION = "1.0.3"
_TRANSIENT = {401, 403, 408, 425, 429}
_ANSWER_LIMIT = 1500  # characters of the LRS's answer kept in an error (dead-letter records are bounded)


@dataclasses.dataclass(frozen=True, slots=True)
class LrsConfig:
    """``endpoint``: the LRS's xAPI endpoint (``http://host:8100/xAPI/``); statements go to
    ``<endpoint>statements``. HTTP Basic credentials."""

    endpoint: str
    username: str
    password: str = dataclasses.field(repr=False)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"the LRS endpoint must be an http(s) URL, not {self.endpoint!r}")
        if not self.endpoint.endswith("/"):
            object.__setattr__(self, "endpoint", self.endpoint + "/")

    @property
    def statements_url(self) -> str:
        return urllib.parse.urljoin(self.endpoint, "statements")


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: str


class LrsClient:
    def __init__(self, config: LrsConfig) -> None:
        self.config = config
        token = base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "X-Experience-API-Version": XAPI_VERSION}

    def _request(self, method: str, url: str, body: object | None = None) -> _Answer:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                return _Answer(response.status, response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            return _Answer(exc.code, exc.read().decode("utf-8", "replace")[:_ANSWER_LIMIT])
        except (OSError, ValueError) as exc:  # refused, reset, timeout, DNS; a malformed answer
            raise LrsUnavailableError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc

    def _unavailable(self, method: str, answer: _Answer) -> LrsUnavailableError:
        return LrsUnavailableError(f"{method} {self.config.statements_url}: HTTP {answer.status}: "
                                   f"{answer.body[:_ANSWER_LIMIT]}")

    def put(self, statement: Mapping[str, Any]) -> None:
        """Store one statement under its id; a 409 (already there) is success."""
        query = urllib.parse.urlencode({"statementId": statement["id"]})
        answer = self._request("PUT", f"{self.config.statements_url}?{query}", statement)
        if answer.status in (200, 204, 409):
            return
        if answer.status >= 500 or answer.status in _TRANSIENT or answer.status < 400:
            raise self._unavailable("PUT", answer)
        raise LrsRejectedError(str(statement["id"]), answer.status, answer.body[:_ANSWER_LIMIT])

    def store(self, statements: Sequence[Mapping[str, Any]]) -> list[BaseException | None]:
        """Store a batch; one outcome per statement (None: stored). A transient failure fails them all."""
        if not statements:
            return []
        if len(statements) == 1:
            try:
                self.put(statements[0])
            except (LrsRejectedError, LrsUnavailableError) as exc:
                return [exc]
            return [None]
        try:
            answer = self._request("POST", self.config.statements_url, list(statements))
        except LrsUnavailableError as exc:
            return [exc] * len(statements)
        if answer.status in (200, 204, 409):
            return [None] * len(statements)
        if answer.status >= 500 or answer.status in _TRANSIENT or answer.status < 400:
            return [self._unavailable("POST", answer)] * len(statements)
        # a refused batch: find the statement(s) at fault, storing the others
        outcomes: list[BaseException | None] = []
        for statement in statements:
            try:
                self.put(statement)
                outcomes.append(None)
            except (LrsRejectedError, LrsUnavailableError) as exc:
                outcomes.append(exc)
        return outcomes

    def statements(self, **params: str) -> list[dict[str, Any]]:
        """Every statement matching the xAPI query ``params``, following ``more`` links."""
        url = f"{self.config.statements_url}?{urllib.parse.urlencode(params)}" if params else self.config.statements_url
        found: list[dict[str, Any]] = []
        while url:
            answer = self._request("GET", url)
            if answer.status != 200:
                raise self._unavailable("GET", answer)
            page = json.loads(answer.body)
            found.extend(page["statements"])
            more = page.get("more")
            url = urllib.parse.urljoin(self.config.endpoint, more) if more else ""
        return found
