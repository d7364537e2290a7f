"""A full rebuild of a catalog replica: a new subscription that replays the topic from its start into an
empty replica. There is no re-sync job: the topic is the source, so a rebuild is just another consumer.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from edbus import Backoff, Bus, Mode
from edbus.errors import ConfigError
from edbus_services.catalog.replica import CatalogReplica

__all__ = ["RebuildResult", "rebuild"]


@dataclasses.dataclass(frozen=True, slots=True)
class RebuildResult:
    events: int  # events the rebuild consumed (acked or dead-lettered)
    seconds: float  # from the start to the last event applied (the idle wait at the end not counted)
    runs: int  # course runs in the new replica
    with_catalog_info: int  # of which with catalog information


def rebuild(bus: Bus, topic: str, path: Path, *, subscription: str, concurrency: int = 16, idle_timeout: float = 2.0,
            max_attempts: int = 3, durable: bool = False, keep_subscription: bool = True) -> RebuildResult:
    """Replay ``topic`` from its first event into a new replica at ``path`` until ``idle_timeout`` seconds
    pass without an event, through the new subscription ``subscription`` (``ConfigError`` if it exists).

    ``keep_subscription``: leave it, so the new replica goes on following the topic (run a consumer of it
    with ``CatalogReplica.register``); else delete it. ``durable=False`` commits without waiting for the
    disk (``synchronous=NORMAL``): a rebuild interrupted by a power loss is started again from scratch.
    """
    if any(s.subscription == subscription for s in bus.subscriptions(topic)):
        raise ConfigError(f"subscription {subscription!r} of {topic!r} exists: a rebuild needs a new one")
    if path.exists() and path.stat().st_size:
        raise ConfigError(f"{path} exists: a rebuild starts from an empty replica")
    replica = CatalogReplica(path, subscription, durable=durable, journal=False)
    try:
        consumer = bus.consumer(topic, subscription, mode=Mode.KEY_ORDERED, start="earliest",
                                concurrency=concurrency, max_attempts=max_attempts, backoff=Backoff(base=0.05))
        replica.register(consumer)
        started = time.monotonic()
        events = consumer.run(idle_timeout=idle_timeout, install_signals=False)
        seconds = max(replica.last_applied - started, 0.0)
        runs = replica.runs()
        return RebuildResult(events, seconds, len(runs), sum(r["last_event_id"] is not None for r in runs.values()))
    finally:
        replica.close()
        if not keep_subscription:
            bus.unsubscribe(topic, subscription)
