"""Disk full on the embedded store: the shim makes every write that would grow the store's files past a
budget fail with ENOSPC, as a full file system does (tests/faults/powerloss/README.md). The publish that
hits it raises one clear ``StoreUnavailableError``, nothing acknowledged is lost (also through a power
loss right after), the store passes its integrity check, and once there is space again publishing works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.powerloss.check import Outcome, PublishLog, check_store
from tests.faults.powerloss.disk import SimulatedDisk

ROOT = Path(__file__).resolve().parents[2]
SPACE = 1_000_000  # bytes the store's files may grow by: a few hundred events
MORE = 300  # events published once there is space again


@pytest.fixture(autouse=True)
def _compiler() -> None:
    if shutil.which("gcc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs gcc to build the disk-full shim")
        pytest.skip("gcc is needed to build the disk-full shim")


def publish(env: dict[str, str] | None, url: str, log: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "tests.faults.powerloss.writer", "publish", "--url", url,
                           "--log", str(log), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    # a raw sqlite3 error or any other exception would end the writer with a traceback
    assert proc.returncode == 0, proc.stderr


def fill_the_disk(disk: SimulatedDisk, log: Path, *, durability: bool) -> PublishLog:
    publish(disk.env(durability=durability, enospc_after=SPACE), disk.url(), log, "--until-error", "--seed", "5")
    published = PublishLog.read(log)
    [error] = published.errors
    assert error.startswith(f"StoreUnavailableError: edbus store {disk.db} is full (no space left)"), error
    assert "\n" not in error and len(published.acked) > 100
    return published


def assert_intact(outcome: Outcome, published: PublishLog) -> None:
    assert not outcome.lost and not outcome.unexpected and outcome.integrity == "ok", outcome.summary()
    assert outcome.stored == len(published.acked), "the refused publish was not stored"


def test_disk_full_refuses_the_publish_keeps_every_acked_event_and_recovers_when_space_is_freed(
        tmp_path: Path) -> None:
    disk = SimulatedDisk.create(tmp_path)
    log = tmp_path / "publish.log"
    published = fill_the_disk(disk, log, durability=False)
    assert_intact(check_store(disk.db, log), published)
    # space freed: a new process publishes again, and everything acknowledged before is still there
    publish(None, disk.url(), log, "--start", str(max(published.tried) + 1), "--count", str(MORE))
    after = PublishLog.read(log)
    assert len(after.acked) == len(published.acked) + MORE
    assert_intact(check_store(disk.db, log), after)


def test_disk_full_then_power_loss_keeps_every_acked_event(tmp_path: Path) -> None:
    disk = SimulatedDisk.create(tmp_path)
    log = tmp_path / "publish.log"
    published = fill_the_disk(disk, log, durability=True)
    disk.power_loss()
    outcome = check_store(disk.db, log)
    assert not outcome.lost and not outcome.unexpected and outcome.integrity == "ok", outcome.summary()
    publish(None, disk.url(), log, "--start", str(max(published.tried) + 1), "--count", str(MORE))
    assert_intact(check_store(disk.db, log), PublishLog.read(log))


def test_producer_starting_on_a_full_disk_gets_one_clear_error_and_the_store_stays_intact(
        tmp_path: Path) -> None:
    disk = SimulatedDisk.create(tmp_path)
    log = tmp_path / "publish.log"
    publish(None, disk.url(), log, "--count", str(MORE))
    publish(disk.env(durability=False, enospc_after=0), disk.url(), log, "--until-error", "--start", str(MORE))
    published = PublishLog.read(log)
    [error] = published.errors
    assert error.startswith(f"StoreUnavailableError: edbus store {disk.db} is full"), error
    assert len(published.acked) == MORE
    assert_intact(check_store(disk.db, log), published)


def mount_tmpfs(where: Path, size: str) -> str | None:
    """None when mounted, else why not (mounting needs privileges a test machine may not give)."""
    where.mkdir(exist_ok=True)
    if shutil.which("mount") is None:
        return "no mount command"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, text=True)
    return None if result.returncode == 0 else f"cannot mount a tmpfs: {result.stderr.strip()}"


def test_a_real_full_tmpfs_behaves_as_the_shim_says(tmp_path: Path) -> None:
    """The cross-check of the shim's ENOSPC model: a 2 MiB tmpfs, filled for real, then grown."""
    small = tmp_path / "small"
    problem = mount_tmpfs(small, "2m")
    if problem is not None:
        if os.environ.get("CI") == "true":  # CI runs as root on the same kind of machine: it can mount
            pytest.fail(f"CI needs the real disk-full check: {problem}")
        pytest.skip(problem)
    try:
        db, log = small / "edbus.db", tmp_path / "publish.log"
        publish(None, f"sqlite:///{db}", log, "--until-error", "--seed", "5")
        published = PublishLog.read(log)
        [error] = published.errors
        assert error.startswith(f"StoreUnavailableError: edbus store {db} is full"), error
        assert len(published.acked) > 100
        assert_intact(check_store(db, log), published)
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)  # space freed
        publish(None, f"sqlite:///{db}", log, "--start", str(max(published.tried) + 1), "--count", str(MORE))
        assert_intact(check_store(db, log), PublishLog.read(log))
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)
