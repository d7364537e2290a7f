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
    └── AccessError                 the broker refused who we are or what we asked; no retry cures it
        ├── AuthenticationError     credentials refused (wrong or expired token), or the broker's TLS
        │                           certificate not trusted (CA file, hostname)
        └── AuthorizationError      authenticated, but the role may not do this; names role and topic

``AccessError`` is a deployment mistake (credentials, grants), reported in one line that names the role
and the topic but never a token; it is not a ``StoreError``, so nothing retries it until a deadline.
``StoreError`` on publish means "not acknowledged": the caller must retry (with the same event id, which
makes the retry idempotent) or report the failure. edbus never reports success for an event it has not
made durable.
"""

from __future__ import annotations

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
    "UnknownEventTypeError",
    "ValidationError",
]


class EdbusError(Exception):
    """Base of every error edbus raises on purpose."""


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
