"""The embedded store's WAL stays bounded under a writer that never pauses."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from edbus.backends.sqlite.connection import Checkpointer


def test_the_wal_stays_bounded_under_a_writer_that_never_pauses(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("PRAGMA synchronous=OFF")  # the disk is not what is tested: write as fast as possible
    writer.execute("CREATE TABLE t(x BLOB)")
    stop, peak, written = threading.Event(), [0], [0]
    wal = tmp_path / "w.db-wal"

    def write() -> None:
        while not stop.is_set():
            writer.execute("INSERT INTO t VALUES (zeroblob(4000))")
            written[0] += 4000
            peak[0] = max(peak[0], wal.stat().st_size)
            time.sleep(0.0001)  # a real publisher leaves gaps (encoding, the fsync) between commits

    checkpointer = Checkpointer(path, interval=0.05, wal_limit=1 << 20)
    thread = threading.Thread(target=write)
    thread.start()
    deadline = time.monotonic() + 30
    while written[0] < 20 << 20 and time.monotonic() < deadline:  # 40 MB through the WAL
        time.sleep(0.05)
    stop.set()
    thread.join()
    checkpointer.stop()
    writer.close()
    assert written[0] >= 20 << 20
    # a PASSIVE checkpoint alone never restarts this WAL: it grows past 60 MB here
    assert peak[0] < 12 << 20, f"WAL peaked at {peak[0] / 1e6:.1f} MB"
