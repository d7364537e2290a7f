"""Opening the embedded store: file layout, pragmas, and turning SQLite failures into edbus errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

from edbus.errors import ConfigError, StoreUnavailableError

__all__ = ["DDL", "Checkpointer", "StoreConnection", "append_sync", "default_path"]

log = logging.getLogger("edbus.sqlite")
_forks = 0  # forks this process descends from: a lock made in another generation is not ours
_lock_swap = threading.Lock()
_live: weakref.WeakSet[StoreConnection] = weakref.WeakSet()  # every open StoreConnection of this process


def _before_fork() -> None:
    """Close every store connection of this process (each held closed by its lock) before ``fork()``.

    SQLite keeps per-process lock state in memory; a child inherits that memory but not the POSIX locks
    it describes, so any connection the child opens to the same file believes it holds locks it does
    not hold: a parent closing its last connection then deleted the WAL the child was committing to
    (acknowledged events lost, measured). With nothing open at the fork, the child starts clean; both
    sides reconnect at their next transaction."""
    for conn in list(_live):
        conn.suspend()


def _after_fork_in_parent() -> None:
    for conn in list(_live):
        conn.resume()


def _after_fork_in_child() -> None:
    global _forks, _lock_swap
    _lock_swap = threading.Lock()
    _forks += 1  # checked per transaction: cheaper than a getpid() system call


def forks() -> int:
    """How many forks this process descends from (state kept per process compares it)."""
    return _forks


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)

DDL = """
CREATE TABLE IF NOT EXISTS topics(name TEXT PRIMARY KEY, created REAL NOT NULL);
-- A position is never reused after the newest events are deleted: deleting the newest event leaves a
-- placeholder at its position (topic '', never read). Not AUTOINCREMENT, which writes one more page per
-- commit (sqlite_sequence); stores made before keep it, and both kinds work with either code.
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, key TEXT,
    headers TEXT NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL, published_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS events_topic_id ON events(topic, id);
CREATE INDEX IF NOT EXISTS events_topic_seq ON events(topic, seq);
CREATE TRIGGER IF NOT EXISTS events_keep_last_position AFTER DELETE ON events
WHEN old.seq > (SELECT coalesce(max(seq), 0) FROM events) BEGIN
    INSERT OR REPLACE INTO events(seq, topic, id, type, key, headers, payload, size, published_at)
    VALUES (old.seq, '', 'edbus:last-position', '', NULL, '{}', x'', 0, 0);
END;
CREATE TABLE IF NOT EXISTS subscriptions(
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, name TEXT NOT NULL, mode TEXT NOT NULL,
    cursor INTEGER NOT NULL, created REAL NOT NULL, owner TEXT, owner_expires REAL NOT NULL DEFAULT 0,
    UNIQUE(topic, name));
-- One row per event a subscription has pulled but not acked: leased, waiting for a retry, or queued
-- behind an earlier event with the same key. Events after the cursor have no row yet.
CREATE TABLE IF NOT EXISTS deliveries(
    sub INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, available_at REAL NOT NULL DEFAULT 0,
    owner TEXT, lease_expires REAL NOT NULL DEFAULT 0, token INTEGER, history TEXT,
    PRIMARY KEY(sub, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries(sub, key, seq);
CREATE TABLE IF NOT EXISTS consumers(
    sub INTEGER NOT NULL, consumer TEXT NOT NULL, seen REAL NOT NULL, PRIMARY KEY(sub, consumer));
CREATE TABLE IF NOT EXISTS schemas(
    event_type TEXT NOT NULL, version INTEGER NOT NULL, schema TEXT NOT NULL, registered_at REAL NOT NULL,
    PRIMARY KEY(event_type, version));
CREATE TABLE IF NOT EXISTS topic_rules(topic TEXT PRIMARY KEY, rule TEXT NOT NULL);
"""


def default_path() -> Path:
    """``$XDG_DATA_HOME/edbus/edbus.db`` (``~/.local/share/edbus/edbus.db``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "edbus" / "edbus.db"


def append_sync(synchronous: str) -> str:
    """The ``synchronous`` pragma for appends: ``full`` (the default) or ``normal`` (docs/operations.md)."""
    value = synchronous.lower()
    if value not in ("full", "normal"):
        raise ConfigError(f"synchronous={synchronous!r}: use full (the default: an acknowledged publish survives "
                          "a power loss) or normal (faster; acknowledged events can be lost on a power loss "
                          "or an OS crash)")
    return value.upper()


def _create_private(path: Path) -> None:
    """Create the store file readable by its owner only, and each missing folder above it 0700: events
    may carry personal data. SQLite gives the -wal and -shm files the database file's permissions."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    try:
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another process made it meanwhile
                folder.mkdir(mode=0o700)
                os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask; never wider than 0700
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)  # an empty file is an empty SQLite database
    except FileExistsError:
        pass  # another process created the store meanwhile
    except OSError as exc:
        raise StoreUnavailableError(f"cannot create {exc.filename or path}: {exc.strerror}") from None


def _explain(exc: sqlite3.Error, path: Path) -> StoreUnavailableError:
    text = str(exc)
    code = getattr(exc, "sqlite_errorname", "")  # the extended result code, e.g. SQLITE_IOERR_WRITE
    if "readonly" in text or "read-only" in text:
        why = "is read-only"
    elif "full" in text:
        why = "is full (no space left)"
    elif code == "SQLITE_IOERR_SHMSIZE":  # growing the -shm file failed: ENOSPC, or a quota
        why = f"is full (no space left to grow {path.name}-shm)"
    elif "not a database" in text or "malformed" in text:
        why = "is corrupt (not an SQLite database or damaged)"
    elif "locked" in text or "busy" in text:
        why = "stayed locked by another process past the busy timeout"
    elif "unable to open" in text:
        why = "cannot be opened"
    else:
        why = f"failed: {text}" + (f" ({code})" if code.startswith("SQLITE_IOERR_") else "")
    return StoreUnavailableError(f"edbus store {path} {why}")


class StoreConnection:
    """One SQLite connection with a lock; ``transaction()`` is BEGIN IMMEDIATE … COMMIT.

    ``durable=True`` commits with ``synchronous=FULL`` (fsync of the WAL before the commit returns) unless
    the store was opened with ``synchronous="normal"``; consumer bookkeeping (leases, acks) commits with
    NORMAL: losing it in a power cut means a redelivery, never a lost event.
    """

    def __init__(self, path: Path, *, create: bool, busy_timeout: float = 30.0,
                 synchronous: str = "full") -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.durable_sync = append_sync(synchronous)
        if not path.exists():
            if not create:
                raise StoreUnavailableError(
                    f"no edbus store at {path} (a producer creates it when it first publishes; "
                    "or point EDBUS_URL / --url at the right one)")
            _create_private(path)
        self._open()

    def _open(self) -> None:
        self._lock_generation = _forks
        self.lock = threading.RLock()
        self._suspended = False
        self._closed = False
        self._connect()
        _live.add(self)

    def _connect(self) -> None:
        """Connect, with the Checkpointer; ``self._connected_in`` says in which fork generation."""
        self._sync = self.durable_sync
        db = None
        try:
            db = sqlite3.connect(str(self.path), timeout=self.busy_timeout, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._sync}")
            db.execute("PRAGMA cache_size=-65536")
            db.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer thread does it
            db.execute("PRAGMA journal_size_limit=67108864")
            db.executescript(DDL)
            db.execute("PRAGMA busy_timeout=0")  # see _begin
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise _explain(exc, self.path) from None
        self.db = db
        self._checkpointer = Checkpointer(self.path)
        self._connected_in = _forks

    def _own_lock(self) -> None:
        """In a forked child: a lock of its own (the parent's may be held by a thread the child lacks)."""
        with _lock_swap:
            if self._lock_generation != _forks:
                self.lock = threading.RLock()
                self._suspended = False
                self._lock_generation = _forks

    def _reconnect(self) -> None:
        """After a fork (see ``_before_fork``), under the lock."""
        if self._closed:
            raise StoreUnavailableError(f"edbus store {self.path} is closed")
        self._connect()

    def suspend(self) -> None:
        """Before ``fork()``: close, and hold the lock until ``resume`` (the parent) or forever (the child,
        which makes a new lock)."""
        self.lock.acquire()
        self._suspended = True
        if self._connected_in != -1 and not self._closed:
            self._checkpointer.stop()
            self.db.close()
            self._connected_in = -1

    def resume(self) -> None:
        if self._suspended:
            self._suspended = False
            self.lock.release()  # the next transaction connects again

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = False, write: bool = True) -> Iterator[sqlite3.Connection]:
        if self._lock_generation != _forks:
            self._own_lock()
        with self.lock:
            if self._connected_in != _forks:
                self._reconnect()
            try:
                sync = self.durable_sync if durable else "NORMAL"
                if sync != self._sync:
                    self.db.execute(f"PRAGMA synchronous={sync}")
                    self._sync = sync
                self._begin(write)
            except sqlite3.Error as exc:
                raise _explain(exc, self.path) from None
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _explain(exc, self.path) from None
                raise

    def _begin(self, write: bool) -> None:
        """Start a transaction, retrying every 50-500 µs while another process holds the lock.

        SQLite's own busy handler sleeps 1, 2, 5, 10 ms… between tries, which would add milliseconds to
        a publish or a consumer's fetch under contention, so the connection's busy timeout is 0 and the
        wait is here. A read transaction takes its snapshot at its first read, so that read is retried too.
        """
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.00005
        while True:
            try:
                if write:
                    self.db.execute("BEGIN IMMEDIATE")
                else:
                    self.db.execute("BEGIN")
                    self.db.execute("SELECT 1 FROM topics LIMIT 1").fetchall()
                return
            except sqlite3.OperationalError as exc:
                if not write:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.0005)

    def close(self) -> None:
        _live.discard(self)
        if self._lock_generation != _forks:
            self._own_lock()  # a forked child: closed before the fork, nothing of ours is open
        with self.lock:
            if not self._closed and self._connected_in != -1:
                self._checkpointer.stop()
                self.db.close()
            self._closed = True


class Checkpointer:
    """Copies the WAL back into the database in a background thread, every ``interval`` seconds.

    SQLite's automatic checkpoint runs inside whichever commit crosses the threshold, adding tens of
    milliseconds to that publish or ack; a PASSIVE checkpoint here blocks neither writers nor readers.
    Every process with the store open runs one, so the WAL is kept short while anyone uses it.

    Under a writer that never pauses, a PASSIVE checkpoint never catches up with the last frame, so the WAL
    never starts over: every commit then appends to the file, and an append that grows a file costs its
    ``fdatasync`` a journal commit of the file's size (a durable publish measured 1.5-2x slower). So once
    ``restart_frames`` frames are in the WAL, a RESTART checkpoint holds writers for a moment (at most
    ``restart_wait`` seconds; the PASSIVE one just before copied nearly everything) and the next commit
    writes over the file from its start. Past ``wal_limit`` bytes (RESTART kept failing: a reader that
    never stops) a TRUNCATE checkpoint waits up to 1 s and empties the file instead of the disk filling.
    """

    def __init__(self, path: Path, interval: float = 0.2, wal_limit: int = 64 << 20,
                 restart_frames: int = 1000, restart_wait: float = 0.05) -> None:
        self.path = path
        self.interval = interval
        self.wal_limit = wal_limit
        self.restart_frames = restart_frames
        self.restart_wait = restart_wait
        self._wal = path.with_name(path.name + "-wal")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edbus-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(str(self.path), timeout=1.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            log.exception("edbus store %s: the checkpoint thread cannot open it", self.path)
            return
        failures = 0
        restarted_at = -1  # the WAL's frame count when it was last restarted (no second RESTART while idle)
        with contextlib.closing(db):
            while not self._stop.wait(self.interval):
                try:
                    _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames >= self.restart_frames and frames != restarted_at:
                        db.execute(f"PRAGMA busy_timeout={int(self.restart_wait * 1000)}")
                        busy, frames, _ = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                        db.execute("PRAGMA busy_timeout=1000")
                        if not busy:
                            restarted_at = frames
                    if self._wal_size() > self.wal_limit:
                        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                    failures = 0
                except sqlite3.Error as exc:
                    failures += 1
                    if failures in (1, 100):  # a full disk or a lost file: say so, do not flood the log
                        log.warning("edbus store %s: checkpoint failed: %s", self.path, exc)

    def _wal_size(self) -> int:
        try:
            return self._wal.stat().st_size
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
