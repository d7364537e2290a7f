"""Cross-process wake-ups for the embedded store, so consumers react to appends in microseconds
instead of polling.

Each waiting process binds a Unix datagram socket at a path in ``<store>-wake/`` (folder 0700, socket
0600). A path socket lives in the filesystem, not in a network namespace, so processes in other
containers that share the store's volume on the same host reach it too; so does macOS. After a commit,
a publisher sends one byte to every socket in the folder, each through its own connected socket: the
bytes a busy listener has not read yet count against the sending socket's buffer, and one shared socket
would run out of buffer (and stop waking everyone) once ~25 listeners had full queues.

A socket nobody has bound refuses connections: that, never a process id (other containers have other
pid namespaces), is how a dead listener's leftover is recognised and deleted. A listener whose socket
file went away (an operator's ``rm``, an older edbus that removed it) binds a new one when its wait
times out. A lost wake-up costs only latency: waiters also time out and look again.

Socket addresses hold at most 107 bytes (103 on macOS). Names are short (``wake-`` and 12 hex digits);
a folder whose path is too long is reached on Linux through ``/proc/self/fd/<folder fd>/``, which is
short whatever the folder (binding relative to the folder would need ``chdir``, which is process-wide and
races with other threads); elsewhere such a store polls, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import select
import socket
import stat
import sys
import threading
import time
from pathlib import Path

__all__ = ["WakeListener", "WakeSender", "make_wake_folder"]

log = logging.getLogger(__name__)

PREFIX = "wake-"  # older edbus left files named edbus-<pid>-<hex>: not ours to wake or delete
_LINUX = sys.platform.startswith("linux")
_MAX_ADDRESS = 107 if _LINUX else 103  # sizeof(sun_path) less the terminating NUL
_FULL = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)  # its queue is full: wake-ups are pending
_RELIST_EVERY = 1.0


def make_wake_folder(folder: Path) -> None:
    """Create the folder readable by its owner only (sockets in it accept anyone who can reach them)."""
    folder.mkdir(mode=0o700, exist_ok=True)


class _Addresses:
    """Socket addresses in one folder, short enough for ``sun_path`` (module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(os.path.abspath(folder))
        self._fd: int | None = None
        if len(os.fsencode(self.folder / (PREFIX + "0" * 12))) > _MAX_ADDRESS and _LINUX:
            self._fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def of(self, name: str) -> str | None:
        """The address of ``name``, or None when this platform cannot address it."""
        if self._fd is not None:
            return f"/proc/self/fd/{self._fd}/{name}"
        path = str(self.folder / name)
        return path if len(os.fsencode(path)) <= _MAX_ADDRESS else None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class WakeSender:
    """Wakes every listener of a folder. Thread-safe: a store is shared by the threads of a process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._addresses = _Addresses(folder)
        self._lock = threading.Lock()
        self._mtime = -1
        self._listed_at = 0.0
        self._peers: dict[str, socket.socket] = {}

    def notify(self) -> None:
        with self._lock:
            self._refresh()
            for name, sock in list(self._peers.items()):
                try:
                    sock.send(b"!")
                except OSError as exc:
                    if exc.errno not in _FULL:
                        self._forget(name, dead=exc.errno in (errno.ECONNREFUSED, errno.ENOTCONN))

    def _refresh(self) -> None:
        try:
            mtime = os.stat(self.folder).st_mtime_ns
        except OSError:
            return
        now = time.monotonic()
        # re-list when the folder changed, and every second anyway: mtime ticks are coarse, and a
        # listener that joined within the same tick would otherwise be missed
        if mtime == self._mtime and now - self._listed_at <= _RELIST_EVERY:
            return
        self._mtime, self._listed_at = mtime, now
        try:
            names = {n for n in os.listdir(self.folder) if n.startswith(PREFIX)}
        except OSError:
            return
        for name in set(self._peers) - names:
            self._forget(name, dead=False)
        for name in names - set(self._peers):
            self._connect(name)

    def _connect(self, name: str) -> None:
        address = self._addresses.of(name)
        if address is None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect(address)
        except ConnectionRefusedError:  # nobody has it bound: a dead listener's leftover
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.folder / name)
        except OSError:  # gone since the listing, or not ours to reach: tried again at the next listing
            sock.close()
        else:
            self._peers[name] = sock

    def _forget(self, name: str, *, dead: bool) -> None:
        self._peers.pop(name).close()
        if dead:
            with contextlib.suppress(OSError):
                os.unlink(self.folder / name)

    def close(self) -> None:
        with self._lock:
            for sock in self._peers.values():
                sock.close()
            self._peers.clear()
            self._addresses.close()


class WakeListener:
    """One per process: ``wait`` returns when a sender wakes it or the timeout passes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pid = os.getpid()
        make_wake_folder(folder)
        self._addresses = _Addresses(folder)
        self._sock: socket.socket | None = None
        self.name = ""
        self._inode = 0
        self._warned = False
        self._bind()

    def _bind(self) -> None:
        name = PREFIX + secrets.token_hex(6)
        address = self._addresses.of(name)
        if address is None:
            self._warn(f"its path is longer than the {_MAX_ADDRESS} bytes a socket address holds on this "
                       "platform; a shorter store path restores them")
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)  # waits poll() it: several consumer threads of a process share this socket
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            self._warn(f"cannot bind a socket in it ({exc.strerror})")
            return
        self._sock, self.name = sock, name
        try:
            os.chmod(self.folder / name, 0o600)
            self._inode = os.stat(self.folder / name).st_ino
        except OSError as exc:  # bound, yet gone or not ours: as good as not bound
            self._unbind()
            self._warn(f"cannot set up its socket ({exc.strerror})")

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("edbus: no wake-ups through %s: %s. Consumers of this process poll instead (every "
                        "0.25 s): no event is lost, only latency", self.folder, why)

    def _still_bound(self) -> bool:
        """False when our socket file was deleted or replaced: then nobody can wake us."""
        try:
            st = os.stat(self.folder / self.name)
        except OSError:
            return False
        return stat.S_ISSOCK(st.st_mode) and st.st_ino == self._inode

    def wait(self, timeout: float) -> bool:
        """True when woken, False on timeout. Drains pending wake-ups.

        Safe from several threads at once (the consumers of a process share one listener): the socket
        stays non-blocking and each thread polls it, so a wake-up wakes every thread waiting then, and
        none changes a timeout under another's ``recv`` (which once ended a consumer with TimeoutError)."""
        sock = self._sock
        if sock is None:
            self._bind()
            sock = self._sock
            if sock is None:
                time.sleep(max(timeout, 0.0))
                return False
        poller = select.poll()
        try:
            poller.register(sock, select.POLLIN)
            ready = poller.poll(max(timeout, 0.0) * 1000)
        except (OSError, ValueError):  # closed by another thread meanwhile: the next wait binds again
            return False
        if not ready:
            if sock is self._sock and not self._still_bound():
                log.info("edbus: the wake-up socket %s was removed; binding a new one", self.folder / self.name)
                self._unbind()
                self._bind()
            return False
        with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
            while True:
                sock.recv(64)  # another thread may have drained it first: woken all the same
        return True

    def _unbind(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(OSError):
                os.unlink(self.folder / self.name)

    def close(self) -> None:
        self._unbind()
        self._addresses.close()
