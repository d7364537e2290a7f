"""Schema registry and compatibility rules."""

from edbus.schema.compatibility import Rule, can_read, check
from edbus.schema.registry import (
    DEFAULT_RULE,
    CheckedSchemaRegistry,
    SchemaRegistry,
    SchemaStorage,
    SchemaVersion,
    canonical,
    parse_rule,
)

__all__ = ["DEFAULT_RULE", "CheckedSchemaRegistry", "Rule", "SchemaRegistry", "SchemaStorage",
           "SchemaVersion", "can_read", "canonical", "check", "parse_rule"]
