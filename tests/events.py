"""Event types used across the tests."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import attrs

from edbus import EventType


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


class Pacing(enum.Enum):
    INSTRUCTOR = "instructor"
    SELF = "self"


@attrs.frozen
class Schedule:
    start: dt.datetime
    end: dt.datetime | None = None
    pacing: Pacing = Pacing.INSTRUCTOR


@attrs.frozen
class CourseInfo:
    course_key: str
    name: str
    schedule: Schedule
    tags: list[str] = attrs.field(factory=list)
    hidden: bool = False
    run_id: uuid.UUID | None = None


@attrs.frozen
class Seq:
    key: str
    n: int
    producer: str = ""


CATALOG_CHANGED = EventType("org.openedx.content_authoring.course.catalog_info.changed.v1", CourseInfo,
                            key="course_key")
SEQ = EventType("org.openedx.test.sequence.item.emitted.v1", Seq, key="key")


def course(i: int, name: str | None = None) -> CourseInfo:
    return CourseInfo(
        course_key=f"course-v1:edX+C{i}+2024_T1",
        name=name or f"Course {i}",
        schedule=Schedule(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), None, Pacing.SELF),
        tags=["demo"],
        run_id=uuid.UUID(int=i),
    )
