"""The edbus exception tree.

Every error edbus raises on purpose is an ``EdbusError``::

    EdbusError
    ├── ConfigError                 bad URL, bad option, bad setting (a user mistake)
    ├── ValidationError             a payload or envelope that does not fit its event type
    │   ├── UnknownEventTypeError   an event type name nobody registered
    │   └── EventTooLargeError      an encoded event over the size limit
    ├── SchemaError
    │   └── IncompatibleSchemaError a new schema version that breaks the topic's compatibility rule
    ├── DecodeError                 stored bytes that cannot be decoded (they go to the dead-letter topic)
    ├── PermanentError              raised by a handler: no retry can cure it (dead-lettered at once)
    ├── StoreError                  the backend failed; what was being written was not acknowledged
    │   ├── StoreUnavailableError   missing, unreadable, read-only, corrupt or full store; broker down
    │   └── PublishTimeoutError     no acknowledgement before the deadline: the outcome is unknown
    ├── NotFoundError               a topic, subscription or event that does not exist
    ├── StuckHandlerError           a handler passed handler_timeout and its thread cannot be freed:
    │                               the consumer process must exit (status 75) and be restarted
    └── AccessError                 the broker refused who we are or what we asked; no retry cures it
        ├── AuthenticationError     credentials refused (wrong or expired token), or the broker's TLS
        │                           certificate not trusted (CA file, hostname)
        └── AuthorizationError      authenticated, but the role may not do this; names role and topic

``AccessError`` is a deployment mistake (credentials, grants), reported in one line that names the role
and the topic but never a token; it is not a ``StoreError``, so nothing retries it until a deadline.
``StoreError`` on publish means "not acknowledged": the caller must retry (with the same event id, which
makes the retry idempotent) or report the failure. edbus never reports success for an event it has not
made durable.

Credentials never reach a message: ``redact`` masks the password of every ``scheme://user:password@``
URL, secret-named options (``token=``, ``password=``, ...) and JWTs in a text. Every ``EdbusError`` message
goes through it, and so do the command line's error lines and the log lines that quote a URL or a foreign
error.
"""

from __future__ import annotations

import re

__all__ = [
    "AccessError",
    "AuthenticationError",
    "AuthorizationError",
    "ConfigError",
    "DecodeError",
    "EdbusError",
    "EventTooLargeError",
    "IncompatibleSchemaError",
    "NotFoundError",
    "PermanentError",
    "PublishTimeoutError",
    "SchemaError",
    "StoreError",
    "StoreUnavailableError",
    "StuckHandlerError",
    "UnknownEventTypeError",
    "ValidationError",
    "redact",
]

# scheme://userinfo@ (also a mistyped scheme: postgresql//u:p@h): the userinfo runs to the last '@' before
# the host's end (a password may hold '@')
_USERINFO = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.-]*:?)?//)([^\s/?#]*)@")
# name=value options and DSN words whose value is a secret (a quoted value ends at its quote)
_SECRET_OPTION = re.compile(
    r"(?i)((?<![A-Za-z0-9_])(?:token|access_token|refresh_token|id_token|password|passwd|pwd|secret|client_secret|"
    r"auth|auth_params|authparams|api_key|apikey|private_key|jwt|credentials|sslpassword|sslkey)\s*=\s*)"
    r"('[^']*'|\"[^\"]*\"|[^&\s'\"#,;)]*)")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def _userinfo(found: re.Match[str]) -> str:
    user, colon, _ = found.group(2).partition(":")
    return f"{found.group(1)}{user}:***@" if colon else f"{found.group(1)}***@"


def redact(text: str) -> str:
    """``text`` with the credentials it may quote masked: ``postgresql://u:***@host/db`` (a userinfo
    without a password, often a token, becomes ``***@``), ``token=***``, ``password=***``, JWTs and
    ``Bearer``/``Basic`` credentials as ``***``. Everything else is kept, so the message still says
    which URL or option is at fault."""
    if "@" in text:
        text = _USERINFO.sub(_userinfo, text)
    if "=" in text:
        text = _SECRET_OPTION.sub(r"\1***", text)
    if "eyJ" in text:
        text = _JWT.sub("***", text)
    return _BEARER.sub(r"\1 ***", text)


class EdbusError(Exception):
    """Base of every error edbus raises on purpose; its message never holds credentials (``redact``)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigError(EdbusError):
    """A configuration mistake: bad URL, bad option or bad setting."""


class ValidationError(EdbusError):
    """A payload that does not fit its event type. Nothing was stored."""


class UnknownEventTypeError(ValidationError):
    """An event type name that is not registered."""


class EventTooLargeError(ValidationError):
    """An encoded event larger than the configured limit. Nothing was stored."""


class SchemaError(EdbusError):
    """A schema problem."""


class IncompatibleSchemaError(SchemaError):
    """A schema version refused by the compatibility rule; the message names the field at fault."""


class DecodeError(EdbusError):
    """Stored bytes that cannot be decoded into an event."""


class PermanentError(EdbusError):
    """Raise it (or a subclass) from a handler for a failure no retry can cure (a refused request, an event
    the handler can never process): the event is dead-lettered at once with this error's record."""


class StoreError(EdbusError):
    """The backend failed; the operation did not take effect."""


class StoreUnavailableError(StoreError):
    """The store is missing, unreadable, read-only, corrupt or full, or the broker is down."""


class PublishTimeoutError(StoreError):
    """No acknowledgement came before the deadline; the event may or may not be stored."""


class NotFoundError(EdbusError):
    """A topic, subscription or event that does not exist."""


class StuckHandlerError(EdbusError):
    """A handler ran past ``handler_timeout`` and its thread could not be freed: the process must exit
    (``edbus.bus.timeouts.exit_for_supervisor``, status 75) and be restarted. Its event was released."""


class AccessError(EdbusError):
    """The broker refused the credentials or the operation: fix the deployment, retrying will not help."""


class AuthenticationError(AccessError):
    """Credentials refused (wrong or expired token), or the broker's TLS certificate not trusted."""


class AuthorizationError(AccessError):
    """The authenticated role lacks the permission; ``role`` and ``resource`` (a topic, usually) name it."""

    def __init__(self, message: str, role: str = "", resource: str = "") -> None:
        super().__init__(message)
        self.role = role
        self.resource = resource
