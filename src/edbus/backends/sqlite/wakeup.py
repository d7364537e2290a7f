"""Cross-process wake-ups for the embedded store, so consumers react to appends in microseconds
instead of polling.

Each waiting process binds a Linux abstract-namespace datagram socket and leaves a marker file with its
name in ``<store>-wake/``. After a commit, a publisher sends one byte to every marker's socket (the list
is cached and re-read when the folder changes). A lost wake-up costs only latency: waiters also time out
and look again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import socket
import time
from pathlib import Path

__all__ = ["WakeListener", "WakeSender"]


class WakeSender:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._mtime = -1
        self._listed_at = 0.0
        self._names: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def notify(self) -> None:
        try:
            mtime = os.stat(self.folder).st_mtime_ns
        except OSError:
            return
        now = time.monotonic()
        # re-list when the folder changed, and every second anyway: mtime ticks are coarse, and a
        # listener that joined within the same tick would otherwise be missed
        if mtime != self._mtime or now - self._listed_at > 1.0:
            self._mtime, self._listed_at = mtime, now
            with contextlib.suppress(OSError):
                self._names = os.listdir(self.folder)
        for name in self._names:
            try:
                self._sock.sendto(b"!", "\0" + name)
            except BlockingIOError:
                pass  # its queue is full: it has wake-ups pending already
            except OSError:  # nobody bound: a dead process left its marker
                with contextlib.suppress(OSError):
                    os.unlink(self.folder / name)

    def close(self) -> None:
        self._sock.close()


class WakeListener:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(exist_ok=True)
        self.pid = os.getpid()
        self.name = f"edbus-{self.pid}-{secrets.token_hex(6)}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.name)
        self._sock.setblocking(False)
        (folder / self.name).touch()

    def wait(self, timeout: float) -> bool:
        """True when woken, False on timeout. Drains pending wake-ups."""
        ready, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while True:
                self._sock.recv(64)
        return True

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.folder / self.name)
