"""The transactional outbox (openedx-events ADR 0015): events written in the service's own database
transaction, moved to the bus by a relay; and an idempotent-consumer helper.

- ``SQLAlchemyOutbox`` records events through a SQLAlchemy ``Connection`` or ``Session``.
- ``DjangoOutbox`` (``edbus.outbox.django``) records them through Django's ORM connection.
- ``Relay`` moves pending rows to the bus in commit order per key, under a lease (one active relay).
- ``first_delivery`` records an event id per subscription in the handler's own transaction.
"""

from edbus.outbox.modes import ProducerMode, ProducerModes
from edbus.outbox.relay import Relay, RelayStats, outbox_status
from edbus.outbox.sqla import SQLAlchemyOutbox
from edbus.outbox.tables import create_tables, metadata
from edbus.outbox.tracking import first_delivery

__all__ = [
    "ProducerMode",
    "ProducerModes",
    "Relay",
    "RelayStats",
    "SQLAlchemyOutbox",
    "create_tables",
    "first_delivery",
    "metadata",
    "outbox_status",
]
