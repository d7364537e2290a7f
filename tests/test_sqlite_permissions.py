"""The embedded store's files are its owner's only: events may carry personal data."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from edbus import Bus, EventType
from edbus.errors import StoreUnavailableError


@attrs.frozen
class Note:
    key: str


NOTE = EventType("org.openedx.test.permissions.note.v1", Note, key="key")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: whatever the store gets, it asked for, not the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_a_new_store_is_0600_with_its_wal_and_shm_and_the_folders_it_creates_are_0700(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "bus.db"
    before = mode(tmp_path)
    with Bus.from_url(f"sqlite:///{db}") as bus:
        bus.publish("notes", NOTE, Note("k"))
        files = {p.name: mode(p) for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))}
        folders = {p.name: mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", Path(f"{db}-wake"))}
    assert files == {"bus.db": 0o600, "bus.db-wal": 0o600, "bus.db-shm": 0o600}
    assert folders == {"a": 0o700, "b": 0o700, "bus.db-wake": 0o700}
    assert mode(tmp_path) == before  # a folder it did not create is left alone


@pytest.mark.usefixtures("open_umask")
def test_an_existing_folder_keeps_its_permissions(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with Bus.from_url(f"sqlite:///{shared}/bus.db") as bus:
        bus.publish("notes", NOTE, Note("k"))
    assert mode(shared) == 0o755
    assert mode(shared / "bus.db") == 0o600


def test_a_store_folder_that_cannot_be_created_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailableError, match=r"cannot create .*file/sub"):
        Bus.from_url(f"sqlite:///{blocker}/sub/bus.db")
