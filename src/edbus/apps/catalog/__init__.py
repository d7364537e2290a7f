"""The course catalog example: Studio publishes catalog changes, a replica service and an audit log consume
them (``edbus demo``). Built only on edbus's public API."""

from edbus.apps.catalog.audit import AuditLog
from edbus.apps.catalog.events import (
    CATALOG_EVENT_TYPES,
    COURSE_CATALOG_INFO_CHANGED,
    COURSE_CREATED,
    COURSE_DELETED,
    TOPIC,
    CatalogInfoChanged,
    CourseCatalogData,
    CourseCreated,
    CourseData,
    CourseDeleted,
    CoursePacing,
    CourseScheduleData,
)
from edbus.apps.catalog.replica import CatalogReplica, CatalogValidationError
from edbus.apps.catalog.service import DemoConfig

__all__ = ["CATALOG_EVENT_TYPES", "COURSE_CATALOG_INFO_CHANGED", "COURSE_CREATED", "COURSE_DELETED", "TOPIC",
           "AuditLog", "CatalogInfoChanged", "CatalogReplica", "CatalogValidationError", "CourseCatalogData",
           "CourseCreated", "CourseData", "CourseDeleted", "CoursePacing", "CourseScheduleData", "DemoConfig"]
