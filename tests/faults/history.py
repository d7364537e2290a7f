"""What each process did, in its own append-only JSON-lines log outside the system under test.

Producers write ``attempt`` before a publish and ``ack`` after it returned; consumers write ``delivery``
when a handler starts; the runner writes ``fault``, ``recovered`` and ``memory`` records. Each line is
flushed as it is written: the OS keeps what a SIGKILLed process flushed (the harness kills processes, not
the machine, so no fsync is needed). A line cut short by a kill is skipped when reading.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["HistoryWriter", "event_id", "now", "read_history"]


def now() -> float:
    """One clock for every process of the run: CLOCK_MONOTONIC is system-wide on Linux."""
    return time.monotonic()


def event_id(producer: str, key: str, seq: int) -> str:
    """The id a producer gives its event: a retry of an unknown publish reuses it."""
    return f"{producer}.{key}.{seq}"


class HistoryWriter:
    """One process's log; every record gets the writer's ``pid``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.pid = os.getpid()
        self._file: IO[str] = open(path, "a", buffering=1)  # noqa: SIM115 - kept open for the process's life
        self._lock = threading.Lock()  # a runner writes from its cluster's supervisor thread too

    def write(self, record_kind: str, /, **fields: Any) -> None:
        self.write_many(record_kind, [fields])

    def write_many(self, record_kind: str, records: Iterable[dict[str, Any]]) -> None:
        """One ``write`` call for a batch (a batch's attempts reach the log together or not at all)."""
        t = now()
        text = "".join(json.dumps({"k": record_kind, "pid": self.pid, "t": t, **r}, separators=(",", ":")) + "\n"
                       for r in records)
        if text:
            with self._lock:
                self._file.write(text)
                self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_history(directory: Path, pattern: str = "*.jsonl") -> Iterator[dict[str, Any]]:
    """Every complete record of every log in ``directory``, file by file, in written order."""
    for path in sorted(directory.glob(pattern)):
        with open(path) as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # cut short by a kill
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                record["log"] = path.stem
                yield record
