"""``edbus exporter``: one process exporting store-wide backlog and lag of every topic to Prometheus."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from edbus.bus.bus import Bus
from edbus.bus.metrics import StoreCollector, serve_metrics
from edbus.cli.common import CliError, State

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from edbus.backends.base import SubscriptionStats, TopicStats

__all__ = ["exporter", "metrics_registry", "store_collector", "store_registry"]


def metrics_registry() -> CollectorRegistry:
    """A new, empty Prometheus registry; a one-line error when prometheus_client is missing."""
    try:
        from prometheus_client.registry import CollectorRegistry
    except ImportError:
        raise CliError("Prometheus metrics need prometheus_client: pip install 'edbus[metrics]'") from None
    return CollectorRegistry()


def store_collector(bus: Bus, topics: Sequence[str] | None = None) -> StoreCollector:
    """Gauges that read ``bus``'s stats at each scrape (``bus`` is then the collector's own: use it from
    no other thread). ``topics``: stored names to export (None: every topic)."""

    admin = bus.administration  # a backend without administration: refused here, not at each scrape

    def stats() -> tuple[list[TopicStats], list[SubscriptionStats]]:
        return admin.topics(), admin.subscriptions(None)

    return StoreCollector(stats, topics)


def store_registry(bus: Bus, topics: Sequence[str] | None = None) -> CollectorRegistry:
    """A Prometheus registry holding ``store_collector(bus, topics)``."""
    registry = metrics_registry()
    registry.register(store_collector(bus, topics))
    return registry


@click.command(short_help="Export every topic's backlog and lag to Prometheus.")
@click.option("--port", type=click.IntRange(0, 65535), default=9464, show_default=True,
              help="Serve http://ADDRESS:PORT/metrics.")
@click.option("--address", default="0.0.0.0", show_default=True, help="The address to listen on.")
@click.pass_context
def exporter(ctx: click.Context, port: int, address: str) -> None:
    """Serve store-wide gauges for Prometheus until Ctrl-C or SIGTERM: events and bytes per topic; backlog,
    in flight, dead letters, age of the oldest unacked event and live consumers per subscription.

    Run one per store; consumers started with --metrics-port export their own counters and histograms.
    """
    state = ctx.find_object(State) or State()
    bus = ctx.with_resource(Bus.from_url(state.url, create=False))
    stop_serving = serve_metrics(port, store_registry(bus), address=address)
    stopped = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopped.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    click.echo(f"exporting metrics on http://{address}:{port}/metrics", err=True)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_serving()
