"""The xAPI and Caliper feed: openedx-events learning events on edbus → xAPI 1.0.3 statements in an LRS
(and Caliper 1.2 events in a sink). Built on edbus's public API only. docs/xapi.md.

    from edbus_services.xapi import run_feed
    run_feed("sqlite:////openedx/data/edbus/edbus.db", "http://127.0.0.1:8100/xAPI/", ("user", "secret"),
             lms_url="https://lms.example.com")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edbus_services.xapi.caliper import CALIPER_CONTEXT, caliper_envelope, to_caliper
from edbus_services.xapi.errors import LrsRejectedError, LrsUnavailableError, SinkError, UntransformableEventError
from edbus_services.xapi.feed import DEFAULT_TOPICS, FeedOptions, FeedReport, XapiFeed
from edbus_services.xapi.lrs import LrsClient, LrsConfig
from edbus_services.xapi.sinks import CaliperFileSink, CaliperHttpSink, CaliperSink
from edbus_services.xapi.statements import EVENT_TYPES, XapiConfig, statement_id, to_statement
from edbus_services.xapi.validation import caliper_envelope_problems, caliper_event_problems, statement_problems

__all__ = ["CALIPER_CONTEXT", "DEFAULT_TOPICS", "EVENT_TYPES", "CaliperFileSink", "CaliperHttpSink", "CaliperSink",
           "FeedOptions", "FeedReport", "LrsClient", "LrsConfig", "LrsRejectedError", "LrsUnavailableError",
           "SinkError", "UntransformableEventError", "XapiConfig", "XapiFeed", "caliper_envelope",
           "caliper_envelope_problems", "caliper_event_problems", "run_feed", "statement_id", "statement_problems",
           "to_caliper", "to_statement"]


def run_feed(bus_url: str | None, lrs_url: str, auth: tuple[str, str], *, lms_url: str = "https://lms.example.com",
             topics: Sequence[str] = DEFAULT_TOPICS, subscription: str = "xapi-feed", batch_size: int = 100,
             caliper_file: str | Path | None = None, caliper_url: str | None = None,
             idle_timeout: float | None = None) -> FeedReport:
    """Run the feed until SIGTERM/SIGINT (or ``idle_timeout`` idle seconds); returns what it did."""
    xapi = XapiConfig(lms_url=lms_url)
    sink: CaliperSink | None = None
    if caliper_file is not None:
        sink = CaliperFileSink(caliper_file, xapi)
    elif caliper_url is not None:
        sink = CaliperHttpSink(caliper_url, xapi)
    options = FeedOptions(topics=tuple(topics), subscription=subscription, batch_size=batch_size)
    with XapiFeed(bus_url, LrsConfig(lrs_url, *auth), options=options, xapi=xapi, caliper_sink=sink) as feed:
        return feed.run(idle_timeout=idle_timeout)
