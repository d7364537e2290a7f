"""A process forked while its embedded store is open: both sides go on using the store safely.

SQLite's per-process lock state is memory the child inherits without the POSIX locks it describes. Before
the fix, a parent closing its store while its forked child published deleted the WAL the child was
committing to: ~95 % of the child's acknowledged events were lost (the integrity check still passed)."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import attrs
import pytest

from edbus import Bus, EventType, StartAt

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@attrs.frozen
class Note:
    key: str
    n: int


NOTE = EventType("org.openedx.test.fork.note.v1", Note, key="key")
COUNT = 800


def in_child(work: Callable[[int, BinaryIO], list[str]]) -> tuple[int, BinaryIO, int]:
    """Fork; the child runs ``work(to_parent, from_parent)`` and reports the ids it published.
    Returns (child pid, the child's lines, write end towards the child)."""
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        status = 1
        try:
            os.close(report_r)
            os.close(go_w)
            ids = work(report_w, os.fdopen(go_r, "rb"))
            os.write(report_w, json.dumps(ids).encode() + b"\n")
            status = 0
        except BaseException as exc:
            os.write(report_w, json.dumps({"error": repr(exc)}).encode() + b"\n")
        finally:
            sys.stdout.flush()
            os._exit(status)
    os.close(report_w)
    os.close(go_r)
    return pid, os.fdopen(report_r, "rb"), go_w


def report(pid: int, lines: BinaryIO) -> list[str]:
    with lines:
        last = json.loads(lines.read().splitlines()[-1])
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"child failed: {last}"
    assert isinstance(last, list)
    return [str(i) for i in last]


def check_store(db: Path, expected: set[str]) -> None:
    with Bus.from_url(f"sqlite:///{db}", create=False) as bus:
        stored = [m.record.id for m in bus.backend.read("notes", StartAt("earliest"), 10 * COUNT)]
    assert len(stored) == len(set(stored))
    assert expected - set(stored) == set(), f"{len(expected - set(stored))} acknowledged events lost"
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_child_publishing_while_its_parent_closes_the_store_it_forked_with_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "bus.db"
    bus = Bus.from_url(f"sqlite:///{db}")
    before = [bus.publish("notes", NOTE, Note("k", i)) for i in range(20)]

    def child(to_parent: int, _from_parent: BinaryIO) -> list[str]:
        ids = [bus.publish("notes", NOTE, Note("child", 0))]
        os.write(to_parent, b"publishing\n")
        ids += [bus.publish("notes", NOTE, Note("child", i)) for i in range(1, COUNT)]
        bus.close()
        return ids

    pid, from_child, to_child = in_child(child)
    assert from_child.readline() == b"publishing\n"
    bus.close()  # the parent's last connection closes while the child commits
    os.close(to_child)
    child_ids = report(pid, from_child)
    assert len(child_ids) == COUNT
    check_store(db, set(before) | set(child_ids))


def test_a_parent_publishing_while_its_forked_child_closes_the_store_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "bus.db"
    bus = Bus.from_url(f"sqlite:///{db}")
    before = [bus.publish("notes", NOTE, Note("k", i)) for i in range(20)]

    def child(_to_parent: int, from_parent: BinaryIO) -> list[str]:
        assert from_parent.readline() == b"close\n"
        bus.close()
        return []

    pid, from_child, to_child = in_child(child)
    ids = [bus.publish("notes", NOTE, Note("parent", i)) for i in range(COUNT // 2)]
    os.write(to_child, b"close\n")  # the child closes while the parent goes on publishing
    ids += [bus.publish("notes", NOTE, Note("parent", i)) for i in range(COUNT // 2, COUNT)]
    os.close(to_child)
    assert report(pid, from_child) == []
    ids += [bus.publish("notes", NOTE, Note("parent-after", 0))]  # and after the child has exited
    bus.close()
    check_store(db, set(before) | set(ids))


def test_parent_and_forked_child_publishing_at_once_both_keep_every_acknowledged_event(tmp_path: Path) -> None:
    db = tmp_path / "bus.db"
    bus = Bus.from_url(f"sqlite:///{db}")

    def child(_to_parent: int, _from_parent: BinaryIO) -> list[str]:
        ids = [bus.publish("notes", NOTE, Note("child", i)) for i in range(COUNT // 2)]
        bus.close()
        return ids

    pid, from_child, to_child = in_child(child)
    ids = [bus.publish("notes", NOTE, Note("parent", i)) for i in range(COUNT // 2)]
    bus.close()
    os.close(to_child)
    check_store(db, set(ids) | set(report(pid, from_child)))
