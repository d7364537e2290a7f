"""Course catalog events, modelled on openedx-events' content_authoring signals.

The payloads mirror ``openedx_events.content_authoring.data``: ``CourseData`` (``COURSE_CREATED``,
``COURSE_DELETED``) and ``CourseCatalogData`` / ``CourseScheduleData`` (``COURSE_CATALOG_INFO_CHANGED``),
with course keys as strings (``course-v1:edX+DemoX+2024_T1``). All three live on one topic, keyed by the
course key, so the changes of one course are delivered in the order Studio made them.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import attrs

from edbus import EventType

__all__ = [
    "CATALOG_EVENT_TYPES",
    "COURSE_CATALOG_INFO_CHANGED",
    "COURSE_CREATED",
    "COURSE_DELETED",
    "TOPIC",
    "CatalogInfoChanged",
    "CourseCatalogData",
    "CourseCreated",
    "CourseData",
    "CourseDeleted",
    "CoursePacing",
    "CourseScheduleData",
]

TOPIC = "course-catalog"


class CoursePacing(enum.Enum):
    """How a course run is paced (openedx-events: ``CourseScheduleData.pacing``)."""

    INSTRUCTOR = "instructor"
    SELF = "self"


@attrs.frozen
class CourseScheduleData:
    start: dt.datetime
    pacing: CoursePacing
    end: dt.datetime | None = None
    enrollment_start: dt.datetime | None = None
    enrollment_end: dt.datetime | None = None


@attrs.frozen
class CourseCatalogData:
    """What the catalog knows of a course run: its key, name, schedule and visibility."""

    course_key: str
    name: str
    schedule_data: CourseScheduleData
    hidden: bool = False
    invitation_only: bool = False


@attrs.frozen
class CourseData:
    course_key: str


@attrs.frozen
class CatalogInfoChanged:
    catalog_info: CourseCatalogData


@attrs.frozen
class CourseCreated:
    course: CourseData


@attrs.frozen
class CourseDeleted:
    course: CourseData


COURSE_CREATED = EventType("org.openedx.content_authoring.course.created.v1", CourseCreated,
                           key="course.course_key")
COURSE_CATALOG_INFO_CHANGED = EventType("org.openedx.content_authoring.course.catalog_info.changed.v1",
                                        CatalogInfoChanged, key="catalog_info.course_key")
COURSE_DELETED = EventType("org.openedx.content_authoring.course.deleted.v1", CourseDeleted,
                           key="course.course_key")

CATALOG_EVENT_TYPES: tuple[EventType[Any], ...] = (COURSE_CREATED, COURSE_CATALOG_INFO_CHANGED, COURSE_DELETED)
