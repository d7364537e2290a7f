"""The openedx-events signals the catalog service consumes, and the topic Studio sends them to.

These are openedx-events' own ``OpenEdxPublicSignal`` objects (``openedx_events.content_authoring``), with
the event key field edx-platform uses. openedx-events (10.5.0) defines no event for a deleted course
(Studio's ``course_deleted`` is a modulestore Django signal that never reaches the bus) and no event about
programs, so the catalog knows neither: see docs/catalog.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from openedx_events.content_authoring.signals import (
    COURSE_CATALOG_INFO_CHANGED,
    COURSE_CREATED,
    COURSE_IMPORT_COMPLETED,
    COURSE_RERUN_COMPLETED,
    XBLOCK_PUBLISHED,
)

__all__ = ["CATALOG_SIGNALS", "COURSE_CATALOG_INFO_CHANGED", "COURSE_CREATED", "COURSE_IMPORT_COMPLETED",
           "COURSE_RERUN_COMPLETED", "TOPIC", "XBLOCK_PUBLISHED", "CatalogSignal", "producer_config"]

TOPIC = "course-catalog-info-changed"  # edx-platform's topic for COURSE_CATALOG_INFO_CHANGED


@dataclasses.dataclass(frozen=True, slots=True)
class CatalogSignal:
    """A signal the catalog consumes and the period-delimited path of its event key."""

    signal: Any  # an OpenEdxPublicSignal (openedx-events is untyped)
    key_field: str

    @property
    def event_type(self) -> str:
        return str(self.signal.event_type)


CATALOG_SIGNALS: dict[str, CatalogSignal] = {s.event_type: s for s in (
    CatalogSignal(COURSE_CATALOG_INFO_CHANGED, "catalog_info.course_key"),
    CatalogSignal(COURSE_CREATED, "course.course_key"),
    CatalogSignal(COURSE_RERUN_COMPLETED, "course.course_key"),
    CatalogSignal(COURSE_IMPORT_COMPLETED, "course.course_key"),
    CatalogSignal(XBLOCK_PUBLISHED, "xblock_info.usage_key"),
)}


def producer_config(topic: str = TOPIC) -> dict[str, dict[str, dict[str, Any]]]:
    """Studio's ``EVENT_BUS_PRODUCER_CONFIG`` that sends every catalog signal to ``topic`` (one topic, so
    the events of one course keep their relative order)."""
    return {s.event_type: {topic: {"event_key_field": s.key_field, "enabled": True}}
            for s in CATALOG_SIGNALS.values()}
