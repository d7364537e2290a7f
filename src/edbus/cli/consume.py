"""``edbus consume``: run a consumer of a named subscription, with your handlers or printing every event."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import click

from edbus.backends.base import Mode
from edbus.bus.bus import Bus
from edbus.bus.health import DEFAULT_STALL_AFTER, serve_health
from edbus.bus.metrics import serve_bus_metrics
from edbus.bus.timeouts import EXIT_HANDLER_STUCK, StuckHandlerError, exit_for_supervisor
from edbus.cli.common import CliError, State, explain
from edbus.cli.output import console, dump_json, jsonable, print_event
from edbus.errors import ConfigError, EdbusError
from edbus.events.types import Event

__all__ = ["EventPrinter", "consume", "load_setup"]


def load_setup(spec: str) -> Callable[..., Any]:
    """``package.module:callable`` (the current directory is importable, as with ``python -m``)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(f"bad handler {spec!r}: use module:callable, e.g. myapp.handlers:setup")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CliError(f"cannot import {module_name!r} for --handler {spec}: {explain(exc)}") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no {attribute!r} (--handler {spec})") from None
    if not callable(target):
        raise CliError(f"--handler {spec} is not callable")
    return target  # type: ignore[no-any-return]


class EventPrinter:
    """The fallback handler behind ``consume --print``: prints every event, decoded with its writer's
    schema. An event that does not decode never reaches it: the runtime dead-letters it."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = console()
        self._lock = threading.Lock()

    def __call__(self, event: Event[Any]) -> None:
        env = event.envelope
        shown = {"id": env.id, "type": env.type, "key": event.key, "topic": event.topic,
                 "time": env.time.isoformat(), "source": env.source, "schemaversion": env.schemaversion,
                 "attempt": event.attempt, "data": jsonable(event.data)}
        if env.traceparent:
            shown["traceparent"] = env.traceparent
        with self._lock:
            if self.as_json:
                self.out.file.write(dump_json(shown) + "\n")
            else:
                print_event(self.out, shown)
            self.out.file.flush()


@contextlib.contextmanager
def _logging(level: str) -> Iterator[logging.Logger]:
    """edbus's log lines on stderr while the consumer runs."""
    logger = logging.getLogger("edbus")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    try:
        yield logging.getLogger("edbus.cli")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


@click.command(short_help="Run a consumer of a subscription: your handlers, or --print.")
@click.argument("topic")
@click.argument("subscription")
@click.option("--handler", "handler_spec", metavar="MODULE:CALLABLE",
              help="Your setup function: called with the Consumer, it registers the handlers.")
@click.option("--print", "print_events", is_flag=True,
              help="Instead of --handler: print every event (decoded) and ack it.")
@click.option("--json", "as_json", is_flag=True, help="With --print: one JSON object per event and line.")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=Mode.KEY_ORDERED.value,
              show_default=True, help="How the subscription spreads events over its consumers (set when it "
                                      "is created).")
@click.option("--from", "start", default="earliest", show_default=True, metavar="earliest|latest",
              help="Where a new subscription starts (an existing one keeps its cursor; see edbus replay). "
                   "An ISO-8601 time or id:<event id> works too.")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="Handlers running at once (events of one key always run one after another).")
@click.option("--max-attempts", type=click.IntRange(min=1),
              help="Attempts before an event goes to the dead-letter topic (default 5).")
@click.option("--max-events", type=click.IntRange(min=1), help="Exit after processing this many events.")
@click.option("--idle-exit", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Exit after this many seconds without events.")
@click.option("--name", help="This consumer's name (default: host-pid-n).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Level of the consumer's log lines on stderr.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve Prometheus metrics at http://0.0.0.0:PORT/metrics (needs edbus[metrics]): this "
                   "consumer's counters and histograms, and its subscription's backlog and lag.")
@click.option("--handler-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Time limit of one handler call: past it the event is released for retry (a failed "
                   f"attempt); if the handler's thread cannot be freed the process exits with status "
                   f"{EXIT_HANDLER_STUCK} for its supervisor to restart it.")
@click.option("--health-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve http://0.0.0.0:PORT/healthz (alive: the fetch loop turned recently) and /readyz "
                   "(the store reachable) for Kubernetes probes and supervisors.")
@click.option("--stall-after", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_STALL_AFTER,
              show_default=True, metavar="SECONDS",
              help="With --health-port: /healthz fails once the fetch loop has not turned for this long.")
@click.pass_context
def consume(ctx: click.Context, topic: str, subscription: str, handler_spec: str | None, print_events: bool,
            as_json: bool, mode: str, start: str, concurrency: int, max_attempts: int | None,
            max_events: int | None, idle_exit: float | None, name: str | None, log_level: str,
            metrics_port: int | None, handler_timeout: float | None, health_port: int | None,
            stall_after: float) -> None:
    """Consume TOPIC as SUBSCRIPTION until Ctrl-C or SIGTERM (then finish what is in flight and exit 0).

    --handler names a setup function, called with the Consumer; it registers a handler per event type.
    Events of types without a handler are acked unhandled:

    \b
      # myapp/handlers.py
      from myapp.events import COURSE_CATALOG_CHANGED
      def on_change(event):                  # event.data is the payload object
          print(event.key, event.data)
      def setup(consumer):
          consumer.add(COURSE_CATALOG_CHANGED, on_change)

    \b
      edbus consume course-catalog search-indexer --handler myapp.handlers:setup
      edbus consume course-catalog debug --print --from latest

    A handler that raises is retried with backoff, then the event goes to the subscription's dead-letter
    topic (see edbus dlq). A store or broker outage pauses the consumer, which retries with backoff.

    Exit status: 0 after a stop, 1 on an error, 75 when a handler passed --handler-timeout and its
    thread could not be freed (restart the process).
    """
    if (handler_spec is None) == (not print_events):
        raise click.UsageError("give exactly one of --handler MODULE:CALLABLE or --print")
    if as_json and not print_events:
        raise click.UsageError("--json goes with --print")
    setup = load_setup(handler_spec) if handler_spec else None
    state = ctx.find_object(State) or State()
    bus = ctx.with_resource(Bus.from_url(state.url, create=False))
    if metrics_port is not None:
        # the gauges read the store through a bus of their own: the consumer's is its run loop's alone
        stats_bus = ctx.with_resource(Bus.from_url(state.url, create=False))
        stored = bus.topic(topic)
        try:
            stop = serve_bus_metrics(bus, metrics_port, stats_bus=stats_bus, topics=[stored])
        except ConfigError as exc:
            raise CliError(f"--metrics-port: {exc}") from None
        ctx.call_on_close(stop)
    consumer = bus.consumer(topic, subscription, mode=mode, start=start, concurrency=concurrency,
                            max_attempts=max_attempts, name=name)
    consumer.handler_timeout = handler_timeout
    if health_port is not None:
        consumer.health.stall_after = stall_after
        try:
            _, stop_health = serve_health(consumer.health, health_port)
        except ConfigError as exc:
            raise CliError(f"--health-port: {exc}") from None
        ctx.call_on_close(stop_health)
    if print_events:
        consumer.add_fallback(EventPrinter(as_json))
    if setup is not None:
        try:
            setup(consumer)
        except EdbusError:
            raise
        except Exception as exc:
            if state.debug:
                raise
            last = traceback.extract_tb(exc.__traceback__)[-1]
            raise CliError(f"--handler {handler_spec} failed: {explain(exc)} "
                           f"({last.filename}:{last.lineno})") from None
        if not consumer.handlers and consumer.fallback is None:
            raise CliError(f"--handler {handler_spec} registered no handler "
                           "(call consumer.add(EVENT_TYPE, function) or consumer.add_fallback(function) in it)")
    handled = ", ".join(sorted(consumer.handlers)) or ("every event (fallback)" if consumer.fallback is not None
                                                       else "every event (--print)")
    with _logging(log_level) as log:
        log.info("consuming %s as %s (%s, %s): %s", consumer.topic, subscription, consumer.mode.value,
                 consumer.name, handled)
        try:
            processed = consumer.run(max_events=max_events, idle_timeout=idle_exit)
        except StuckHandlerError as exc:
            exit_for_supervisor(exc)  # the stuck thread would keep a normal exit waiting for ever
        log.info("stopped after %d event(s)", processed)
