"""The checker: what the writer was told was acknowledged against what the store holds."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import attrs

from edbus import Bus
from edbus.backends.sqlite import SqliteBackend
from tests.faults.powerloss.writer import TOPIC, event_id, payload

__all__ = ["Outcome", "PublishLog", "acked_so_far", "check_store", "handled_ids", "stored_events"]


@dataclass(frozen=True, slots=True)
class PublishLog:
    tried: frozenset[int]
    acked: frozenset[int]
    errors: tuple[str, ...]

    @classmethod
    def read(cls, path: Path) -> PublishLog:
        tried: set[int] = set()
        acked: set[int] = set()
        errors = []
        for line in path.read_text().splitlines() if path.exists() else []:
            kind, _, rest = line.partition(" ")
            if kind == "E":
                errors.append(rest)
                continue
            first, last = (int(x) for x in rest.split())
            (tried if kind == "T" else acked).update(range(first, last + 1))
        return cls(frozenset(tried), frozenset(acked), tuple(errors))


def acked_so_far(log: Path) -> int:
    """How many events the writer has been told are acknowledged (it publishes them in order)."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - 256))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return 0
    acks = [line for line in tail.splitlines() if line.startswith("A ")]
    return int(acks[-1].split()[2]) + 1 if acks else 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """``lost``: acknowledged but absent; ``unexpected``: stored but never published, or damaged."""

    acked: int
    stored: int
    lost: tuple[str, ...]
    unexpected: tuple[str, ...]
    integrity: str

    def summary(self) -> str:
        return (f"acked {self.acked}, stored {self.stored}, lost {len(self.lost)}, "
                f"unexpected {len(self.unexpected)}, integrity {self.integrity}")


def _integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))


def stored_events(db: Path) -> dict[str, dict[str, object]]:
    """Every event of the test topic, read through edbus (which opens the store as usual)."""
    bus = Bus(SqliteBackend(db, create=False))
    try:
        return {message.record.id: data for message, _, data in bus.read(TOPIC)}
    finally:
        bus.close()


def check_store(db: Path, log: Path) -> Outcome:
    """Open the store normally (no shim), check its integrity and compare it with the writer's log."""
    published = PublishLog.read(log)
    if not db.exists():
        lost = tuple(event_id(n) for n in sorted(published.acked))
        return Outcome(len(published.acked), 0, lost, (), "no store")
    integrity = _integrity(db)
    events = stored_events(db)
    expected = {event_id(n): attrs.asdict(payload(n)) for n in published.tried}
    lost = tuple(event_id(n) for n in sorted(published.acked) if event_id(n) not in events)
    unexpected = tuple(i for i, data in events.items() if expected.get(i) != data)
    return Outcome(len(published.acked), len(events), lost, unexpected, integrity)


def handled_ids(log: Path) -> list[str]:
    """The ids a consumer's handler got, in order, with repeats."""
    return [line[2:] for line in log.read_text().splitlines()] if log.exists() else []
