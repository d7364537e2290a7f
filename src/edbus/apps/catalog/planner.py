"""What the simulated Studio does: a deterministic (seeded) stream of course catalog changes.

Courses get realistic Open edX keys (``course-v1:MITx+6.00.1x+2024_T1``). Creating a course emits
``COURSE_CREATED`` then its ``COURSE_CATALOG_INFO_CHANGED``; later changes rename, reschedule, re-pace,
hide or restrict a course, or delete it. Poison changes carry a blank course name: a buggy editor's save
that the replica's validation refuses. They are not part of Studio's catalog (see ``PlannedEvent.poison``).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import attrs

from edbus import EventType
from edbus.apps.catalog.events import (
    COURSE_CATALOG_INFO_CHANGED,
    COURSE_CREATED,
    COURSE_DELETED,
    CatalogInfoChanged,
    CourseCatalogData,
    CourseCreated,
    CourseData,
    CourseDeleted,
    CoursePacing,
    CourseScheduleData,
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
    """One event Studio will publish. ``poison`` events are never applied to Studio's own catalog."""

    event_type: EventType[Any]
    payload: Any
    course_key: str
    poison: bool = False


class CatalogPlanner:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.live: dict[str, CourseCatalogData] = {}
        self.titles: dict[str, str] = {}
        self._used: set[str] = set()

    def new_key(self) -> str:
        while True:
            org, (number, title), run = (self.rng.choice(ORGS), self.rng.choice(COURSES), self.rng.choice(RUNS))
            if len(self._used) > len(ORGS) * len(COURSES) * len(RUNS) // 2:  # crowded: vary the number too
                number = f"{number}.{self.rng.randrange(1, 1000)}"
            key = f"course-v1:{org}+{number}+{run}"
            if key not in self._used:
                self._used.add(key)
                self.titles[key] = title
                return key

    def schedule(self) -> CourseScheduleData:
        start = EPOCH + dt.timedelta(days=self.rng.randrange(0, 900), hours=self.rng.choice((0, 9, 14)))
        end = start + dt.timedelta(weeks=self.rng.randrange(4, 17)) if self.rng.random() < 0.9 else None
        enrollment_start = start - dt.timedelta(days=self.rng.randrange(7, 60))
        enrollment_end = end - dt.timedelta(days=7) if end is not None and self.rng.random() < 0.5 else None
        pacing = CoursePacing.SELF if self.rng.random() < 0.3 else CoursePacing.INSTRUCTOR
        return CourseScheduleData(start, pacing, end, enrollment_start, enrollment_end)

    def create(self) -> list[PlannedEvent]:
        key = self.new_key()
        info = CourseCatalogData(key, self.titles[key], self.schedule(), hidden=self.rng.random() < 0.05)
        self.live[key] = info
        return [PlannedEvent(COURSE_CREATED, CourseCreated(CourseData(key)), key),
                PlannedEvent(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(info), key)]

    def update(self) -> PlannedEvent:
        key = self.rng.choice(list(self.live))
        info = self.live[key]
        what = self.rng.choice(("rename", "rename", "reschedule", "reschedule", "pacing", "hidden", "invitation"))
        if what == "rename":
            info = attrs.evolve(info, name=self.titles[key] + self.rng.choice(SUFFIXES))
        elif what == "reschedule":
            info = attrs.evolve(info, schedule_data=attrs.evolve(self.schedule(), pacing=info.schedule_data.pacing))
        elif what == "pacing":
            pacing = (CoursePacing.SELF if info.schedule_data.pacing is CoursePacing.INSTRUCTOR
                      else CoursePacing.INSTRUCTOR)
            info = attrs.evolve(info, schedule_data=attrs.evolve(info.schedule_data, pacing=pacing))
        elif what == "hidden":
            info = attrs.evolve(info, hidden=not info.hidden)
        else:
            info = attrs.evolve(info, invitation_only=not info.invitation_only)
        self.live[key] = info
        return PlannedEvent(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(info), key)

    def delete(self) -> PlannedEvent:
        key = self.rng.choice(list(self.live))
        del self.live[key]
        return PlannedEvent(COURSE_DELETED, CourseDeleted(CourseData(key)), key)

    def poison(self) -> PlannedEvent:
        key = self.rng.choice(list(self.live))
        info = attrs.evolve(self.live[key], name=POISON_NAME)  # Studio's catalog keeps the valid name
        return PlannedEvent(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(info), key, poison=True)


def plan_events(courses: int, changes: int, poison: int, seed: int) -> list[PlannedEvent]:
    """``courses`` created first, then ``changes`` changes (5% creations, 4% deletions, the rest edits),
    with ``poison`` poison changes spread among them."""
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
        elif roll < 0.05 or not planner.live:
            events += planner.create()
        elif roll < 0.09 and len(planner.live) > 10:
            events.append(planner.delete())
        else:
            events.append(planner.update())
        if i in poison_at:
            if not planner.live:
                events += planner.create()
            events.append(planner.poison())
    return events
