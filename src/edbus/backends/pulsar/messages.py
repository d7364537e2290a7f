"""Records ↔ Pulsar messages: the envelope headers are message properties, the key is the message key,
the position is the serialized message id (hex). The event id and type are the CloudEvents headers
``ce_id`` and ``ce_type``; a record whose id or type differs from them (or that has none) carries it in a
reserved property of its own (``edbus_id``, ``edbus_type``), which is not a header when read back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edbus.backends.base import Message, Record

__all__ = ["ID", "TYPE", "event_id", "position", "properties", "to_message", "message_id"]

ID = "edbus_id"
TYPE = "edbus_type"


def properties(record: Record, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    props = dict(record.headers if headers is None else headers)
    if props.get("ce_id") != record.id:  # the envelope's id says it already (every event the codec made)
        props[ID] = record.id
    if props.get("ce_type") != record.type:
        props[TYPE] = record.type
    return props


def event_id(props: Mapping[str, str]) -> str:
    """The event id of a message, from its properties."""
    return props[ID] if ID in props else props.get("ce_id", "")


def position(msg: Any) -> str:
    return bytes(msg.message_id().serialize()).hex()


def message_id(text: str) -> Any:
    import pulsar

    from edbus.errors import ValidationError

    try:
        return pulsar.MessageId.deserialize(bytes.fromhex(text))
    except (ValueError, BaseException) as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise ValidationError(f"bad position {text!r} for a Pulsar topic") from None


def to_message(msg: Any, topic: str, msg_id: Any = None) -> Message:
    """``topic`` is the edbus (short, unprefixed) name the message is reported under; ``msg_id``: the
    message's id if the caller has it already."""
    props = msg.properties()  # a new dict on every call (pybind11's copy of the C++ map): ours to change
    record_id = event_id(props)
    props.pop(ID, None)
    record_type = props.pop(TYPE) if TYPE in props else props.get("ce_type", "")
    key = msg.partition_key() or None
    at = bytes((msg_id if msg_id is not None else msg.message_id()).serialize()).hex()
    return Message(Record(record_id, record_type, key, props, bytes(msg.data())), topic, at,
                   msg.publish_timestamp() / 1000.0)
