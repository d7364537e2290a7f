"""A SQLAlchemy URL for a Django database alias, so the relay reads the outbox the service writes."""

from __future__ import annotations

from typing import Any

from edbus.errors import ConfigError

__all__ = ["sqlalchemy_url"]

_DIALECTS = {
    "django.db.backends.postgresql": "postgresql+psycopg",
    "django.db.backends.mysql": "mysql+pymysql",
    "django.db.backends.sqlite3": "sqlite",
}


def sqlalchemy_url(using: str = "default") -> Any:
    """``sqlalchemy.URL`` for ``settings.DATABASES[using]`` (PostgreSQL, MySQL/MariaDB or SQLite)."""
    import sqlalchemy as sa
    from django.conf import settings

    db = settings.DATABASES[using]
    dialect = _DIALECTS.get(db["ENGINE"])
    if dialect is None:
        raise ConfigError(f"the outbox relay supports {', '.join(_DIALECTS)}, not {db['ENGINE']}")
    if dialect == "sqlite":
        return sa.URL.create("sqlite", database=str(db["NAME"]))
    return sa.URL.create(dialect, username=db.get("USER") or None, password=db.get("PASSWORD") or None,
                         host=db.get("HOST") or None, port=int(db["PORT"]) if db.get("PORT") else None,
                         database=db["NAME"])
