"""Records ↔ Pulsar messages: the envelope headers are message properties, the event id and type are two
reserved properties, the key is the message key, the position is the serialized message id (hex)."""

from __future__ import annotations

from typing import Any

from edbus.backends.base import Message, Record

__all__ = ["ID", "TYPE", "position", "properties", "to_message", "message_id"]

ID = "edbus_id"
TYPE = "edbus_type"


def properties(record: Record, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(record.headers if headers is None else headers), ID: record.id, TYPE: record.type}


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
    event_id = props.pop(ID, "")
    event_type = props.pop(TYPE, "")
    key = msg.partition_key() or None
    at = bytes((msg_id if msg_id is not None else msg.message_id()).serialize()).hex()
    return Message(Record(event_id, event_type, key, props, bytes(msg.data())), topic, at,
                   msg.publish_timestamp() / 1000.0)
