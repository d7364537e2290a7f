"""The demo's simulated LMS: learners enrol in the demo's courses, get graded, pass or fail, earn
certificates, some unenrol. Each step is the openedx-events learning signal edx-platform sends, encoded as
edbus's openedx producer encodes it (``SignalCodec``: openedx-events' Avro serializer and the Kafka
implementation's headers), on the topics the xAPI feed reads (``DEFAULT_TOPICS``).

The plan is deterministic (seeded). Each learner's events get strictly increasing event times, whole
milliseconds: a statement id is a uuid5 of actor, verb, object and millisecond timestamp, so two facts of one
learner never share an id. Every published event is logged in ``lms.db`` with the id of the statement it must
become: the demo's check compares the LRS with that log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import socket
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import Any

from edbus import Bus
from edbus.openedx import SignalCodec
from edbus_services.catalog.planner import plan_events
from edbus_services.catalog.publisher import publish_retrying
from edbus_services.catalog.service import DemoConfig, ServiceProcess
from edbus_services.xapi.statements import XapiConfig, to_statement

__all__ = ["LEARNING_SIGNALS", "LmsEvent", "LmsSimulator", "demo_courses", "plan_learning", "planned_events"]

log = logging.getLogger("edbus.demo.lms")

LMS_SOURCE = "openedx/lms/web"  # what openedx-events puts in ``source`` for the LMS (SERVICE_VARIANT=lms)
LMS_DDL = """
CREATE TABLE IF NOT EXISTS published(
    event_id TEXT PRIMARY KEY, event_type TEXT NOT NULL, topic TEXT NOT NULL, user_id INTEGER NOT NULL,
    statement_id TEXT NOT NULL, event_time TEXT NOT NULL, published REAL NOT NULL);
"""
_BATCH = 100

# signal name in openedx_events.learning.signals -> (topic, event key field), as edx-platform's
# EVENT_BUS_PRODUCER_CONFIG (plus the feed's additions, docs/xapi.md) sends them
LEARNING_SIGNALS: dict[str, tuple[str, str]] = {
    "COURSE_ENROLLMENT_CREATED": ("learning-course-enrollment-lifecycle", "enrollment.course.course_key"),
    "COURSE_ENROLLMENT_CHANGED": ("learning-course-enrollment-lifecycle", "enrollment.course.course_key"),
    "COURSE_UNENROLLMENT_COMPLETED": ("learning-course-enrollment-lifecycle", "enrollment.course.course_key"),
    "PERSISTENT_GRADE_SUMMARY_CHANGED": ("learning-course-grade-lifecycle", "grade.course.course_key"),
    "EXTERNAL_GRADER_SCORE_SUBMITTED": ("learning-course-grade-lifecycle", "score.course_id"),
    "COURSE_PASSING_STATUS_UPDATED": ("learning-badges-lifecycle", "course_passing_status.course.course_key"),
    "CERTIFICATE_CREATED": ("learning-certificate-lifecycle", "certificate.course.course_key"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class LmsEvent:
    """One step of a learner: the signal's name and the fields its data is built from."""

    signal: str
    user_id: int
    course_key: str
    course_name: str
    mode: str = "audit"
    grade: float = 0.0
    passing: bool = False
    points: int = 0

    @property
    def topic(self) -> str:
        return LEARNING_SIGNALS[self.signal][0]


def demo_courses(config: DemoConfig, limit: int = 40) -> list[tuple[str, str]]:
    """(course key, name) of the first courses the demo's Studio creates."""
    courses: dict[str, str] = {}
    for planned in plan_events(config.courses, 0, 0, config.seed):
        info = planned.catalog_info
        if info is not None and len(courses) < limit:
            courses.setdefault(str(info.course_key), str(info.name))
    return list(courses.items())


def planned_events(config: DemoConfig) -> int:
    """How many learning events the LMS publishes: a third of Studio's changes, at least 20."""
    return max(20, config.changes // 3)


def _journey(rng: random.Random, user_id: int, course: tuple[str, str]) -> list[LmsEvent]:
    key, name = course
    mode = rng.choice(("audit", "verified", "honor"))
    steps = [LmsEvent("COURSE_ENROLLMENT_CREATED", user_id, key, name, mode=mode)]
    if mode == "audit" and rng.random() < 0.4:
        mode = "verified"
        steps.append(LmsEvent("COURSE_ENROLLMENT_CHANGED", user_id, key, name, mode=mode))
    grade = 0.0
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.3:
            steps.append(LmsEvent("EXTERNAL_GRADER_SCORE_SUBMITTED", user_id, key, name, points=rng.randint(0, 10)))
        grade = round(min(1.0, grade + rng.uniform(0.1, 0.45)), 2)
        steps.append(LmsEvent("PERSISTENT_GRADE_SUMMARY_CHANGED", user_id, key, name, mode=mode, grade=grade))
    passing = grade >= 0.5
    steps.append(LmsEvent("COURSE_PASSING_STATUS_UPDATED", user_id, key, name, grade=grade, passing=passing))
    if passing and mode != "audit":
        steps.append(LmsEvent("CERTIFICATE_CREATED", user_id, key, name, mode=mode, grade=grade))
    elif not passing and rng.random() < 0.3:
        steps.append(LmsEvent("COURSE_UNENROLLMENT_COMPLETED", user_id, key, name, mode=mode))
    return steps


def plan_learning(config: DemoConfig, total: int | None = None) -> list[LmsEvent]:
    """``total`` learning events (default ``planned_events``): learners' journeys, interleaved as many
    learners progress at once."""
    total = planned_events(config) if total is None else total
    rng = random.Random(config.seed + 1)
    courses = demo_courses(config)
    active: list[list[LmsEvent]] = []
    events: list[LmsEvent] = []
    next_user = 1001
    while len(events) < total:
        while len(active) < 30:
            active.append(_journey(rng, next_user, rng.choice(courses)))
            next_user += 1
        journey = rng.choice(active)
        events.append(journey.pop(0))
        if not journey:
            active.remove(journey)
    return events


def _user(user_id: int) -> Any:
    from openedx_events.learning.data import UserData, UserPersonalData

    return UserData(id=user_id, is_active=True, pii=UserPersonalData(
        username=f"learner{user_id}", email=f"learner{user_id}@example.com", name=f"Learner {user_id}"))


def signal_data(event: LmsEvent, when: dt.datetime) -> dict[str, Any]:
    """The signal's data (openedx-events attrs classes), as edx-platform builds it."""
    from opaque_keys.edx.keys import CourseKey
    from openedx_events.learning import data as d

    course = d.CourseData(course_key=CourseKey.from_string(event.course_key), display_name=event.course_name)
    user = _user(event.user_id)
    if event.signal.startswith(("COURSE_ENROLLMENT", "COURSE_UNENROLLMENT")):
        return {"enrollment": d.CourseEnrollmentData(
            user=user, course=course, mode=event.mode, creation_date=when,
            is_active=event.signal != "COURSE_UNENROLLMENT_COMPLETED")}
    if event.signal == "PERSISTENT_GRADE_SUMMARY_CHANGED":
        return {"grade": d.PersistentCourseGradeData(
            user_id=event.user_id, course=course, course_edited_timestamp=when, course_version="65f1c0d2",
            grading_policy_hash="a1b2c3", percent_grade=event.grade,
            letter_grade="Pass" if event.grade >= 0.5 else "", passed_timestamp=when)}  # not nullable in the schema
    if event.signal == "EXTERNAL_GRADER_SCORE_SUBMITTED":
        return {"score": d.ExternalGraderScoreData(
            points_possible=10, points_earned=event.points, course_id=event.course_key, score_msg="<p>Graded</p>",
            submission_id=event.user_id, user_id=str(event.user_id), queue_key=f"q{event.user_id}",
            module_id=str(CourseKey.from_string(event.course_key).make_usage_key("problem", "p1")),
            queue_name="python")}
    if event.signal == "COURSE_PASSING_STATUS_UPDATED":
        return {"course_passing_status": d.CoursePassingStatusData(is_passing=event.passing, course=course,
                                                                    user=user)}
    if event.signal == "CERTIFICATE_CREATED":
        return {"certificate": d.CertificateData(
            user=user, course=course, mode=event.mode, grade=f"{event.grade:.2f}", current_status="downloadable",
            download_url=f"https://lms.example.com/certificates/{uuid.uuid4().hex}", name=f"Learner {event.user_id}",
            previous_status="notpassing")}
    raise ValueError(f"no data for {event.signal}")


class LmsSimulator:
    """Publishes learning events on a Bus of its own and logs each with its expected statement id."""

    def __init__(self, bus: Bus, db_path: str, xapi: XapiConfig) -> None:
        from openedx_events.event_bus.avro.serializer import AvroSignalSerializer
        from openedx_events.learning import signals

        self.bus, self.xapi = bus, xapi
        self.codec = SignalCodec(bus.registry)
        self.signals = {name: getattr(signals, name) for name in LEARNING_SIGNALS}
        self._avro = {name: AvroSignalSerializer(signal) for name, signal in self.signals.items()}
        self.sourcehost = socket.gethostname()
        self._last: dict[int, dt.datetime] = {}  # each learner's latest event time
        self.db = sqlite3.connect(db_path, isolation_level=None, timeout=30)
        self.db.executescript(LMS_DDL)

    def event_time(self, user_id: int) -> dt.datetime:
        """Now in whole milliseconds, strictly after the learner's previous event."""
        now = dt.datetime.now(dt.UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        last = self._last.get(user_id)
        if last is not None and now <= last:
            now = last + dt.timedelta(milliseconds=1)
        self._last[user_id] = now
        return now

    def publish(self, events: Sequence[LmsEvent]) -> None:
        """Publish ``events`` (one append per topic, retried with the same ids), then log them."""
        from openedx_events.data import EventsMetadata

        by_topic: dict[str, list[Any]] = {}
        rows = []
        for event in events:
            signal = self.signals[event.signal]
            topic, key_field = LEARNING_SIGNALS[event.signal]
            when = self.event_time(event.user_id)
            data = signal_data(event, when)
            metadata = EventsMetadata(event_type=signal.event_type, id=uuid.uuid4(), time=when, source=LMS_SOURCE,
                                      sourcehost=self.sourcehost)
            record = self.codec.encode(self.bus.topic(topic), signal, key_field, data, metadata)
            by_topic.setdefault(topic, []).append(record)
            statement = to_statement(self.xapi, signal.event_type, self._avro[event.signal].to_dict(data), when)
            if statement is None:
                raise ValueError(f"{signal.event_type} has no xAPI mapping")
            rows.append((record.id, signal.event_type, topic, event.user_id, statement["id"], when.isoformat()))
        for topic, records in by_topic.items():
            publish_retrying(self.bus, topic, records)
        stamp = time.time()
        self.db.executemany("INSERT INTO published VALUES (?, ?, ?, ?, ?, ?, ?)", [(*r, stamp) for r in rows])

    def close(self) -> None:
        self.db.close()


def run_lms(process: ServiceProcess, db_path: str, xapi: XapiConfig) -> int:
    """Publish the planned learning events at a quarter of Studio's rate; returns how many."""
    config = process.config
    events = plan_learning(config)
    rate = config.rate / 4
    bus = config.open_bus(LMS_SOURCE)
    lms = LmsSimulator(bus, db_path, xapi)
    started = time.monotonic()
    sent = 0
    try:
        while sent < len(events) and not process.stopping.is_set():
            due = len(events) if rate <= 0 else int((time.monotonic() - started) * rate) + 1
            due = min(due, sent + _BATCH, len(events))
            if due <= sent:
                process.stopping.wait(min(0.05, (sent + 1) / rate - (time.monotonic() - started)))
                continue
            lms.publish(events[sent:due])
            sent = due
    finally:
        lms.close()
        bus.close()
    log.info("published %d of %d learning events in %.1fs", sent, len(events), time.monotonic() - started)
    return sent
