"""What the simulated Studio does: a deterministic (seeded) stream of openedx-events catalog events.

Courses get realistic Open edX keys (``course-v1:MITx+6.00.1x+2024_T1``). Creating a course emits
``COURSE_CREATED`` then its ``COURSE_CATALOG_INFO_CHANGED``; a rerun (a new run of an existing course) emits
``COURSE_RERUN_COMPLETED`` then the new run's catalog info; later changes rename, reschedule, re-pace, hide
or restrict a run (``COURSE_CATALOG_INFO_CHANGED``) or publish some of its content (``XBLOCK_PUBLISHED``).
Poison changes carry a blank course name: a buggy editor's save that the replica's validation refuses.
They are not part of Studio's catalog (see ``PlannedEvent.poison``). There are no deletions: openedx-events
has no event for a deleted course.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import attrs
from opaque_keys.edx.keys import CourseKey
from openedx_events.content_authoring.data import CourseCatalogData, CourseData, CourseScheduleData, XBlockData

from edbus_services.catalog.signals import (
    CATALOG_SIGNALS,
    COURSE_CATALOG_INFO_CHANGED,
    COURSE_CREATED,
    COURSE_RERUN_COMPLETED,
    XBLOCK_PUBLISHED,
)

__all__ = ["POISON_NAME", "CatalogPlanner", "PlannedEvent", "plan_events"]

ORGS = ("edX", "MITx", "HarvardX", "DelftX", "UQx", "BerkeleyX", "ColumbiaX", "GTx", "IBM", "LinuxFoundationX",
        "StanfordOnline", "UBCx")
COURSES = (
    ("DemoX", "Demonstration Course"), ("CS50x", "Introduction to Computer Science"),
    ("6.00.1x", "Introduction to Computer Science and Programming Using Python"),
    ("6.002x", "Circuits and Electronics"), ("PH125.1x", "Data Science: R Basics"),
    ("CALC1x", "Calculus 1A: Differentiation"), ("TW3421x", "Credit Risk Management"),
    ("LFS101x", "Introduction to Linux"), ("ENGSCI1x", "Engineering Science Foundations"),
    ("BIO101", "Principles of Biochemistry"), ("HIST201x", "Modern World History"),
    ("ECON1x", "Microeconomics"), ("STAT110x", "Introduction to Probability"),
    ("ML101", "Machine Learning Fundamentals"), ("ACCT1x", "Financial Accounting"),
    ("CHEM1x", "General Chemistry"), ("PSY100x", "Introduction to Psychology"),
    ("WRIT1x", "Academic Writing"), ("AI4ALL", "AI for Everyone"), ("SUST1x", "Sustainable Energy"),
)
RUNS = ("2023_T1", "2023_T2", "2023_T3", "2024_T1", "2024_T2", "2024_T3", "2025_T1", "2025_T2", "1T2024",
        "2T2024", "3T2025", "Spring2025")
SUFFIXES = ("", " (Self-Paced)", ": Foundations", " II", " (Archived)", " — Professional Certificate")
POISON_NAME = "   "
EPOCH = dt.datetime(2023, 1, 9, tzinfo=dt.UTC)


@attrs.frozen
class PlannedEvent:
    """One event Studio will publish: its signal's event type and data (openedx-events attrs objects).
    ``poison`` events are never applied to Studio's own catalog."""

    event_type: str
    data: dict[str, Any]
    course_key: str  # the course run it is about
    poison: bool = False

    @property
    def catalog_info(self) -> Any:
        return self.data.get("catalog_info")

    @property
    def event_key(self) -> str:
        """The key it is published under (its signal's key field): per-key order holds for it."""
        value: Any = self.data
        for part in CATALOG_SIGNALS[self.event_type].key_field.split("."):
            value = value[part] if isinstance(value, dict) else getattr(value, part)
        return str(value)


class CatalogPlanner:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.live: dict[str, Any] = {}  # course key -> its CourseCatalogData
        self.titles: dict[str, str] = {}
        self._used: set[str] = set()

    def _remember(self, key: str, title: str) -> str:
        self._used.add(key)
        self.titles[key] = title
        return key

    def new_key(self) -> str:
        while True:
            org, (number, title), run = (self.rng.choice(ORGS), self.rng.choice(COURSES), self.rng.choice(RUNS))
            if len(self._used) > len(ORGS) * len(COURSES) * len(RUNS) // 2:  # crowded: vary the number too
                number = f"{number}.{self.rng.randrange(1, 1000)}"
            key = f"course-v1:{org}+{number}+{run}"
            if key not in self._used:
                return self._remember(key, title)

    def rerun_key(self) -> str | None:
        """A new run of an existing course, or None when the course picked has every run already."""
        source = CourseKey.from_string(self.rng.choice(list(self.live)))
        for run in self.rng.sample(RUNS, len(RUNS)):
            key = f"course-v1:{source.org}+{source.course}+{run}"
            if key not in self._used:
                return self._remember(key, self.titles[str(source)])
        return None

    def schedule(self) -> Any:
        start = EPOCH + dt.timedelta(days=self.rng.randrange(0, 900), hours=self.rng.choice((0, 9, 14)))
        end = start + dt.timedelta(weeks=self.rng.randrange(4, 17)) if self.rng.random() < 0.9 else None
        enrollment_start = start - dt.timedelta(days=self.rng.randrange(7, 60))
        enrollment_end = end - dt.timedelta(days=7) if end is not None and self.rng.random() < 0.5 else None
        pacing = "self" if self.rng.random() < 0.3 else "instructor"
        return CourseScheduleData(start=start, pacing=pacing, end=end, enrollment_start=enrollment_start,
                                  enrollment_end=enrollment_end)

    def _info(self, key: str) -> PlannedEvent:
        info = CourseCatalogData(course_key=CourseKey.from_string(key), name=self.titles[key],
                                 schedule_data=self.schedule(), hidden=self.rng.random() < 0.05)
        self.live[key] = info
        return PlannedEvent(COURSE_CATALOG_INFO_CHANGED.event_type, {"catalog_info": info}, key)

    def create(self) -> list[PlannedEvent]:
        key = self.new_key()
        course = CourseData(course_key=CourseKey.from_string(key))
        return [PlannedEvent(COURSE_CREATED.event_type, {"course": course}, key), self._info(key)]

    def rerun(self) -> list[PlannedEvent]:
        key = self.rerun_key()
        if key is None:
            return self.create()
        course = CourseData(course_key=CourseKey.from_string(key))
        return [PlannedEvent(COURSE_RERUN_COMPLETED.event_type, {"course": course}, key), self._info(key)]

    def update(self) -> PlannedEvent:
        key = self.rng.choice(list(self.live))
        info = self.live[key]
        what = self.rng.choice(("rename", "rename", "reschedule", "reschedule", "pacing", "hidden", "invitation"))
        if what == "rename":
            info = attrs.evolve(info, name=self.titles[key] + self.rng.choice(SUFFIXES))
        elif what == "reschedule":
            info = attrs.evolve(info, schedule_data=attrs.evolve(self.schedule(), pacing=info.schedule_data.pacing))
        elif what == "pacing":
            pacing = "self" if info.schedule_data.pacing == "instructor" else "instructor"
            info = attrs.evolve(info, schedule_data=attrs.evolve(info.schedule_data, pacing=pacing))
        elif what == "hidden":
            info = attrs.evolve(info, hidden=not info.hidden)
        else:
            info = attrs.evolve(info, invitation_only=not info.invitation_only)
        self.live[key] = info
        return PlannedEvent(COURSE_CATALOG_INFO_CHANGED.event_type, {"catalog_info": info}, key)

    def publish_content(self) -> PlannedEvent:
        key = self.rng.choice(list(self.live))
        block_type = self.rng.choice(("chapter", "sequential", "vertical"))
        usage_key = CourseKey.from_string(key).make_usage_key(block_type, f"{self.rng.getrandbits(64):016x}")
        return PlannedEvent(XBLOCK_PUBLISHED.event_type,
                            {"xblock_info": XBlockData(usage_key=usage_key, block_type=block_type)}, key)

    def poison(self) -> PlannedEvent:
        key = self.rng.choice(list(self.live))
        info = attrs.evolve(self.live[key], name=POISON_NAME)  # Studio's catalog keeps the valid name
        return PlannedEvent(COURSE_CATALOG_INFO_CHANGED.event_type, {"catalog_info": info}, key, poison=True)


def plan_events(courses: int, changes: int, poison: int, seed: int) -> list[PlannedEvent]:
    """``courses`` created first, then ``changes`` changes (4% new courses, 3% reruns, 15% content
    publishes, the rest catalog edits), with ``poison`` poison changes spread among them."""
    planner = CatalogPlanner(seed)
    events: list[PlannedEvent] = []
    for _ in range(courses):
        events += planner.create()
    steps = max(changes, poison)
    poison_at = set(planner.rng.sample(range(steps), poison))
    for i in range(steps):
        roll = planner.rng.random()
        if i >= changes:
            pass
        elif roll < 0.04 or not planner.live:
            events += planner.create()
        elif roll < 0.07:
            events += planner.rerun()
        elif roll < 0.22:
            events.append(planner.publish_content())
        else:
            events.append(planner.update())
        if i in poison_at:
            if not planner.live:
                events += planner.create()
            events.append(planner.poison())
    return events
