"""A real LRS for the xAPI feed's tests: Ralph (ralph-malph 5.1.0) started by scripts/ralph.sh on a free
loopback port, with its filesystem backend and HTTP Basic credentials, in a folder of the test run.

Under CI=true a Ralph that cannot be installed or started fails the tests; elsewhere they are skipped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attr
import pytest

from edbus import Bus
from edbus_services.xapi import LrsClient, LrsConfig

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ralph.sh"
USER, PASSWORD = "edbus-tests", "s3cret-" + uuid.uuid4().hex[:8]


@dataclasses.dataclass(frozen=True, slots=True)
class Ralph:
    """One Ralph server: its data folder, port and credentials."""

    data: Path
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/xAPI/"

    @property
    def lrs(self) -> LrsConfig:
        return LrsConfig(self.endpoint, USER, PASSWORD, timeout=5.0)

    def script(self, command: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "EDBUS_RALPH_DATA": str(self.data), "EDBUS_RALPH_PORT": str(self.port),
               "EDBUS_RALPH_USER": USER, "EDBUS_RALPH_PASSWORD": PASSWORD}
        return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        done = self.script("start")
        if done.returncode != 0:
            raise RuntimeError(f"scripts/ralph.sh start failed:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        self.script("stop")

    def statements(self, home_page: str) -> list[dict[str, Any]]:
        """The statements Ralph returns (GET /xAPI/statements) whose actor belongs to ``home_page``."""
        return [s for s in LrsClient(self.lrs).statements(limit="100")
                if s["actor"]["account"]["homePage"] == home_page]

    def stored_lines(self, home_page: str) -> list[dict[str, Any]]:
        """The documents in Ralph's storage file for ``home_page``: one per write, duplicates included."""
        path = self.data / "lrs" / "fs_lrs.jsonl"
        if not path.exists():
            return []
        docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [d for d in docs if d["actor"]["account"]["homePage"] == home_page]


def free_port() -> int:
    return int(subprocess.run([str(SCRIPT), "free-port"], capture_output=True, text=True, check=True).stdout)


def start_ralph(data: Path) -> Ralph:
    """A started Ralph, or fail (CI) / skip (elsewhere) with the reason."""
    ralph = Ralph(data, free_port())
    try:
        ralph.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        ralph.stop()
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs Ralph (scripts/ralph.sh): {exc}")
        pytest.skip(f"Ralph is not available: {exc}")
    return ralph


@pytest.fixture(scope="session")
def ralph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ralph]:
    """The test session's Ralph; each test uses its own LMS URL, so their statements never mix."""
    server = start_ralph(tmp_path_factory.mktemp("ralph"))
    yield server
    server.stop()


@pytest.fixture
def own_ralph(tmp_path: Path) -> Iterator[Ralph]:
    """A Ralph of the test's own, which the test may stop and start."""
    server = start_ralph(tmp_path / "ralph")
    yield server
    server.stop()


@pytest.fixture
def lms_url() -> str:
    return f"https://lms-{uuid.uuid4().hex[:10]}.example.com"


# -- learning events, produced exactly as edbus.openedx's producer does (openedx-events' own serializer) --

COURSE = "course-v1:edX+DemoX+2024_T1"
T0 = dt.datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)
TOPICS = {  # the feed's default topics (docs/xapi.md)
    "COURSE_ENROLLMENT_CREATED": "learning-course-enrollment-lifecycle",
    "COURSE_ENROLLMENT_CHANGED": "learning-course-enrollment-lifecycle",
    "COURSE_UNENROLLMENT_COMPLETED": "learning-course-enrollment-lifecycle",
    "COURSE_PASSING_STATUS_UPDATED": "learning-badges-lifecycle",
    "CCX_COURSE_PASSING_STATUS_UPDATED": "learning-badges-lifecycle",
    "CERTIFICATE_CREATED": "learning-certificate-lifecycle",
    "PERSISTENT_GRADE_SUMMARY_CHANGED": "learning-course-grade-lifecycle",
    "EXTERNAL_GRADER_SCORE_SUBMITTED": "learning-course-grade-lifecycle",
}
KEY_FIELDS = {
    "COURSE_ENROLLMENT_CREATED": "enrollment.course.course_key",
    "COURSE_ENROLLMENT_CHANGED": "enrollment.course.course_key",
    "COURSE_UNENROLLMENT_COMPLETED": "enrollment.course.course_key",
    "COURSE_PASSING_STATUS_UPDATED": "course_passing_status.course.course_key",
    "CCX_COURSE_PASSING_STATUS_UPDATED": "course_passing_status.course.ccx_course_key",
    "CERTIFICATE_CREATED": "certificate.course.course_key",
    "PERSISTENT_GRADE_SUMMARY_CHANGED": "grade.course.course_key",
    "EXTERNAL_GRADER_SCORE_SUBMITTED": "score.course_id",
}


def user(n: int) -> Any:
    from openedx_events.learning.data import UserData, UserPersonalData

    return UserData(id=n, is_active=True, pii=UserPersonalData(username=f"learner{n}", email=f"learner{n}@example.com",
                                                              name=f"Learner {n}"))


def course(key: str = COURSE) -> Any:
    from opaque_keys.edx.keys import CourseKey
    from openedx_events.learning.data import CourseData

    return CourseData(course_key=CourseKey.from_string(key), display_name="Demo course")


def signal_data(name: str, n: int, **overrides: Any) -> dict[str, Any]:
    """Realistic data of signal ``name`` for learner ``n``; ``overrides`` replace fields of the data class."""
    from ccx_keys.locator import CCXLocator
    from opaque_keys.edx.keys import CourseKey
    from openedx_events.learning import data as d

    if name in ("COURSE_ENROLLMENT_CREATED", "COURSE_ENROLLMENT_CHANGED", "COURSE_UNENROLLMENT_COMPLETED"):
        value = d.CourseEnrollmentData(user=user(n), course=course(), mode="verified",
                                       is_active=name != "COURSE_UNENROLLMENT_COMPLETED", creation_date=T0)
        arg = "enrollment"
    elif name == "COURSE_PASSING_STATUS_UPDATED":
        value, arg = d.CoursePassingStatusData(is_passing=n % 2 == 0, course=course(), user=user(n)), \
            "course_passing_status"
    elif name == "CCX_COURSE_PASSING_STATUS_UPDATED":
        ccx = d.CcxCourseData(ccx_course_key=CCXLocator.from_string(f"ccx-v1:edX+DemoX+2024_T1+ccx@{n % 5 + 1}"),
                              master_course_key=CourseKey.from_string(COURSE), display_name="Demo CCX",
                              coach_email="coach@example.com")
        value, arg = d.CcxCoursePassingStatusData(is_passing=True, user=user(n), course=ccx), "course_passing_status"
    elif name == "CERTIFICATE_CREATED":
        value = d.CertificateData(user=user(n), course=course(), mode="verified", grade="0.82",
                                  download_url=f"https://lms.example.com/certificates/{n:032x}", name=f"Learner {n}",
                                  current_status="downloadable", previous_status="notpassing")
        arg = "certificate"
    elif name == "PERSISTENT_GRADE_SUMMARY_CHANGED":
        value = d.PersistentCourseGradeData(user_id=n, course=course(), course_edited_timestamp=T0,
                                            course_version="65f1c0d2", grading_policy_hash="a1b2c3",
                                            percent_grade=round((n % 100) / 100, 2), letter_grade="Pass",
                                            passed_timestamp=T0)
        arg = "grade"
    elif name == "EXTERNAL_GRADER_SCORE_SUBMITTED":
        value = d.ExternalGraderScoreData(points_possible=10, points_earned=n % 11, course_id=COURSE,
                                          score_msg="<p>Good</p>", submission_id=n, user_id=str(n),
                                          module_id="block-v1:edX+DemoX+2024_T1+type@problem+block@p1",
                                          queue_key=f"q{n}", queue_name="python")
        arg = "score"
    else:
        raise ValueError(name)
    return {arg: attr.evolve(value, **overrides)}


def publish_signal(bus: Bus, name: str, data: dict[str, Any], time: dt.datetime, topic: str | None = None,
                   key_field: str | None = None) -> str:
    """Send one signal event to ``bus`` as ``EdbusProducer.send`` does; returns the event id."""
    (event_id,) = publish_signals(bus, name, [(data, time)], topic, key_field)
    return event_id


def publish_signals(bus: Bus, name: str, events: list[tuple[dict[str, Any], dt.datetime]], topic: str | None = None,
                    key_field: str | None = None) -> list[str]:
    """Send events of signal ``name`` encoded as ``EdbusProducer.send`` does, in one append."""
    from openedx_events.data import EventsMetadata
    from openedx_events.learning import signals

    from edbus.openedx.serialization import SignalCodec

    signal = getattr(signals, name)
    topic = topic or TOPICS[name]
    codec = SignalCodec(bus.registry)
    records = []
    for data, time in events:
        metadata = EventsMetadata(event_type=signal.event_type, id=uuid.uuid1(), minorversion=0,
                                  source="openedx/lms/web", sourcehost="lms-1", sourcelib=(10, 5, 0), time=time)
        records.append(codec.encode(bus.topic(topic), signal, key_field or KEY_FIELDS[name], data, metadata))
    return bus.publish_encoded(topic, records)
