"""Threads of one process sharing one embedded store: every publish succeeds and is stored once.

Before the fix, a cursor still referenced after the store's lock was released reset its cached SQLite
statement while another thread was running it: threads appending through one store failed now and then
with ``bad parameter or other API misuse``."""

from __future__ import annotations

import threading
from pathlib import Path

import attrs

from edbus import Bus, EventType, StartAt


@attrs.frozen
class Note:
    key: str
    n: int


NOTE = EventType("org.openedx.test.threads.note.v1", Note, key="key")
THREADS = 8
EACH = 2000


def test_eight_threads_appending_to_one_store_all_succeed_and_every_event_is_stored_once(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    # synchronous=normal: no fsync per commit, so the threads contend as hard as the machine allows
    with Bus.from_url(f"sqlite:///{tmp_path}/bus.db?synchronous=normal") as bus:
        records = [[bus.codec.encode("notes", NOTE, Note(f"k{t}", i)) for i in range(EACH)] for t in range(THREADS)]
        gate = threading.Barrier(THREADS)

        def append(batch: list[object]) -> None:
            gate.wait()
            try:
                for record in batch:
                    bus.backend.append("notes", [record])  # type: ignore[list-item]
            except BaseException as exc:  # reported below: a thread's error must fail the test
                errors.append(exc)

        workers = [threading.Thread(target=append, args=(batch,)) for batch in records]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        stored = bus.backend.read("notes", StartAt("earliest"), THREADS * EACH + 1)
    assert sorted(m.record.id for m in stored) == sorted(r.id for batch in records for r in batch)


def test_a_refused_append_in_a_group_commit_fails_only_its_own_caller(tmp_path: Path) -> None:
    from edbus.backends import Record
    from edbus.backends.sqlite.store import SqliteBackend, _Pending
    from edbus.errors import ValidationError

    backend = SqliteBackend(tmp_path / "bus.db")
    try:
        backend.append("t", [Record("taken", "t.v1", None, {}, b"first")])

        def pending(id_: str, payload: bytes) -> _Pending:
            return _Pending("t", [Record(id_, "t.v1", None, {}, payload)],
                            [("t", id_, "t.v1", None, "{}", payload, 2 + len(payload), 0.0)])

        batch = [pending("a", b"1"), pending("taken", b"other"), pending("b", b"2")]
        backend._commit(batch, batch[0])
        assert [type(p.error) for p in batch] == [type(None), ValidationError, type(None)]
        stored = {m.record.id: m.record.payload for m in backend.read("t", StartAt("earliest"), 10)}
        assert stored == {"taken": b"first", "a": b"1", "b": b"2"}
    finally:
        backend.close()
