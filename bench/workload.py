"""The benchmarks' shared workload: one ~1 KB Open edX learning event (imported as ``workload``,
the scripts run as ``python bench/<name>.py``)."""

from __future__ import annotations

import attrs

from edbus import EventType

__all__ = ["EVENT", "Enrollment", "payload"]


@attrs.frozen
class Enrollment:
    """About 1 KB encoded with its envelope: a realistic Open edX learning event."""

    course_key: str
    user_id: int
    mode: str
    is_active: bool
    description: str


EVENT = EventType("org.openedx.learning.course.enrollment.changed.v1", Enrollment, key="course_key")


def payload(i: int) -> Enrollment:
    return Enrollment(f"course-v1:edX+Bench{i % 100}+2024_T1", i, "verified", True, "d" * 720)
