"""The embedded backend (the default): one SQLite file, many processes."""

from edbus.backends.sqlite.connection import default_path
from edbus.backends.sqlite.store import SqliteBackend

__all__ = ["SqliteBackend", "default_path"]
