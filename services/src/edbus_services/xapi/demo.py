"""The xAPI feed in ``edbus demo`` (``--lrs URL --lrs-user USER``, password in ``$EDBUS_LRS_PASSWORD``):
a simulated LMS publishes openedx-events learning events (``edbus_services.xapi.lms``) while the feed sends
their statements to the LRS; at the end the LRS must hold exactly the expected statements.

``SERVICE`` is a ``DemoService`` (``edbus_services.catalog.service``). Its processes read the LRS from
``$EDBUS_DEMO_LRS_URL``, ``$EDBUS_DEMO_LRS_USER`` and ``$EDBUS_LRS_PASSWORD`` (``edbus demo`` sets the first
two from its options), never from the feed's own ``$EDBUS_LRS_URL``: the demo writes to an LRS only when
asked. Each run gets its own LMS URL (the actors' home page): the check reads only this run's statements,
so an LRS that holds other statements is fine.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import sqlite3
import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edbus import Bus
from edbus.errors import ConfigError, redact
from edbus_services.catalog.service import DemoConfig, ServiceFigures, ServiceProcess, ServiceProgress
from edbus_services.xapi.errors import LrsUnavailableError
from edbus_services.xapi.feed import DEFAULT_TOPICS, FeedOptions, XapiFeed
from edbus_services.xapi.lms import LMS_DDL, planned_events, run_lms
from edbus_services.xapi.lrs import LrsClient, LrsConfig
from edbus_services.xapi.statements import XapiConfig

__all__ = ["ENV_LRS_URL", "ENV_LRS_USER", "ENV_PASSWORD", "SERVICE", "SUBSCRIPTION", "XapiDemoService",
           "check_lrs", "lrs_from_env"]

ENV_LRS_URL, ENV_LRS_USER, ENV_PASSWORD = "EDBUS_DEMO_LRS_URL", "EDBUS_DEMO_LRS_USER", "EDBUS_LRS_PASSWORD"
SUBSCRIPTION = "xapi-feed"
LMS, FEED = "lms", "xapi-feed"


def lrs_from_env(environ: Mapping[str, str] = os.environ) -> LrsConfig:
    """The demo's LRS; ``ConfigError`` naming what is missing."""
    missing = [name for name in (ENV_LRS_URL, ENV_LRS_USER, ENV_PASSWORD) if not environ.get(name)]
    if missing:
        raise ConfigError(f"the xAPI demo needs an LRS: set {', '.join(missing)} (edbus demo --lrs URL "
                          "--lrs-user USER, password in $EDBUS_LRS_PASSWORD)")
    return LrsConfig(environ[ENV_LRS_URL], environ[ENV_LRS_USER], environ[ENV_PASSWORD])


def check_lrs(lrs: LrsConfig) -> None:
    """Fail fast (``ConfigError``) when the LRS does not answer or refuses the credentials, instead of the
    feed retrying every statement into the dead-letter topic. One page of nothing: statements since now."""
    since = dt.datetime.now(dt.UTC).isoformat()
    try:
        LrsClient(lrs).statements(since=since)
    except LrsUnavailableError as exc:
        raise ConfigError(f"the LRS is not usable: {exc}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class _Counts:
    stored: int = 0
    batches: int = 0


class _CountFile:
    """What the feed process has stored so far, for the demo's progress: a small JSON file, replaced whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stored = self.batches = 0

    def after_send(self, statements: Sequence[Mapping[str, Any]], outcomes: Sequence[BaseException | None]) -> None:
        self.stored += sum(outcome is None for outcome in outcomes)
        self.batches += 1
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"stored": self.stored, "batches": self.batches}))
        temporary.replace(self.path)  # atomic: the parent never reads half a file

    @staticmethod
    def read(path: Path) -> _Counts:
        try:
            return _Counts(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return _Counts()


class XapiDemoService:
    """An LMS simulator (producer) and the xAPI feed (consumer), checked against the LRS."""

    name = "xapi"

    def processes(self, config: DemoConfig) -> Sequence[tuple[str, bool]]:
        self.lms_url(config)  # chosen once, here in the parent, before its processes start
        with contextlib.closing(sqlite3.connect(self.lms_db(config))) as db:  # the report reads it even if empty
            db.executescript(LMS_DDL)
        return [(FEED, False), (LMS, True)]

    # -- files of the run ------------------------------------------------------------------------------
    def lms_db(self, config: DemoConfig) -> Path:
        return config.path("lms.db")

    def lms_url(self, config: DemoConfig) -> str:
        """This run's LMS root URL (``xapi-run.json``): a fresh host, so its statements are its own."""
        path = config.path("xapi-run.json")
        if not path.exists():
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"lms_url": f"https://lms-{uuid.uuid4().hex[:12]}.demo.example.com"}))
            temporary.replace(path)
        return str(json.loads(path.read_text())["lms_url"])

    # -- the processes ---------------------------------------------------------------------------------
    def run(self, process: ServiceProcess) -> int:
        config = process.config
        xapi = XapiConfig(lms_url=self.lms_url(config))
        if process.name == LMS:
            return run_lms(process, str(self.lms_db(config)), xapi)
        counts = _CountFile(config.path("xapi-feed.counts.json"))
        options = FeedOptions(subscription=SUBSCRIPTION, max_attempts=5)
        with XapiFeed(config.url, lrs_from_env(), options=options, xapi=xapi, after_send=counts.after_send) as feed:
            process.on_stop(feed.stop)
            process.ready()
            report = feed.run()
        config.path("xapi-feed.report.json").write_text(json.dumps(
            {"events": report.events, "statements": report.statements, "batches": report.batches}))
        return report.events

    # -- what the parent sees ----------------------------------------------------------------------------
    def _subscriptions(self, bus: Bus) -> tuple[int, int, int]:
        """(events on the feed's topics, backlog of its subscription, dead letters)."""
        wanted = {bus.topic(t) for t in DEFAULT_TOPICS}
        published = sum(t.events for t in bus.administration.topics() if t.topic in wanted)
        backlog = dead = 0
        for topic in wanted:
            for s in bus.administration.subscriptions(topic):
                if s.subscription == SUBSCRIPTION:
                    backlog, dead = backlog + s.backlog, dead + s.dead_lettered
        return published, backlog, dead

    def progress(self, config: DemoConfig, bus: Bus) -> ServiceProgress:
        planned = planned_events(config)
        published, backlog, dead = self._subscriptions(bus)
        counts = _CountFile.read(config.path("xapi-feed.counts.json"))
        caught_up = published >= planned and backlog == 0
        return ServiceProgress(counts.stored, planned, caught_up,
                               f"statements stored, {counts.batches} batches; dead letters: {dead}")

    def report(self, config: DemoConfig, bus: Bus) -> ServiceFigures:
        lms_url = self.lms_url(config)
        with contextlib.closing(sqlite3.connect(self.lms_db(config))) as db:
            published = db.execute("SELECT statement_id, event_type FROM published").fetchall()
        expected = {statement_id for statement_id, _ in published}
        by_type = collections.Counter(_short(event_type) for _, event_type in published)
        started = time.monotonic()
        lrs = lrs_from_env()
        stored = [s for s in LrsClient(lrs).statements(limit="100") if s["actor"]["account"]["homePage"] == lms_url]
        read_in = time.monotonic() - started
        ids = collections.Counter(s["id"] for s in stored)
        twice = [i for i, n in ids.items() if n > 1]
        missing, unexpected = expected - set(ids), set(ids) - expected
        _, backlog, dead = self._subscriptions(bus)
        feed = _read_json(config.path("xapi-feed.report.json"))
        latencies = sorted((_time(s["stored"]) - _time(s["timestamp"])).total_seconds() for s in stored)
        planned = planned_events(config)
        ok = (len(published) == len(expected) == planned and not twice and not missing and not unexpected and dead == 0
              and backlog == 0 and bool(feed))
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(by_type.items()))
        rows = [
            ("events published", f"{len(published):,} of {planned:,} planned by the simulated LMS on "
                                 f"{len(DEFAULT_TOPICS)} topics (openedx-events learning signals): {kinds}"),
            ("statements in the LRS", f"{len(ids):,} of this run's ({lms_url}) read back from "
                                      f"{redact(lrs.statements_url)} in {read_in:.1f} s; "
                                      f"each expected id once: {_yes(not twice and not missing)}"
                                      f", none missing ({len(missing)}), none unexpected ({len(unexpected)})"
                                      + (f", {len(twice)} stored twice" if twice else "")),
            ("feed", f"{feed.get('events', 0):,} events settled, {feed.get('statements', 0):,} statements sent in "
                     f"{feed.get('batches', 0):,} batches (subscription {SUBSCRIPTION}); backlog {backlog}"
             if feed else "[bold red]the feed process wrote no report[/bold red]"),
            ("dead letters", f"{dead} (expected 0)"),
        ]
        if latencies:
            rows.append(("publish → stored", f"p50 {_ms(statistics.median(latencies))}, "
                                             f"p99 {_ms(latencies[int(0.99 * (len(latencies) - 1))])}, "
                                             f"max {_ms(latencies[-1])} (event time → the LRS's stored time)"))
        return ServiceFigures(tuple(rows), ok=ok)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _short(event_type: str) -> str:
    """``org.openedx.learning.course.enrollment.created.v1`` → ``course.enrollment.created``."""
    return event_type.removeprefix("org.openedx.learning.").rsplit(".", 1)[0]


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _yes(ok: bool) -> str:
    return "yes" if ok else "[bold red]NO[/bold red]"


SERVICE = XapiDemoService()
