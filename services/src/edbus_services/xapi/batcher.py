"""Gather items submitted by many handler threads into batches for one sender thread.

The edbus consumer runs one handler call per event; a handler submits its item and waits for the
outcome of the batch it went out in, so an event is acknowledged only after its statement is stored.
A batch leaves when it is full or ``linger`` seconds after its first item.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from edbus.errors import ConfigError

__all__ = ["Batcher"]

log = logging.getLogger("edbus_services.xapi")
T = TypeVar("T")
Send = Callable[[Sequence[T]], Sequence[BaseException | None]]
AfterSend = Callable[[Sequence[T], Sequence[BaseException | None]], None]


class Batcher(Generic[T]):
    """``send(items)`` returns one outcome per item (None: done). Items with the same ``key`` in one batch
    are sent once and share the outcome. ``after_send`` runs after each send, before the submitters learn
    the outcome (a hook for measurements, and for tests that crash the process exactly there)."""

    def __init__(self, send: Send[T], key: Callable[[T], str], *, size: int, linger: float, name: str,
                 after_send: AfterSend[T] | None = None) -> None:
        if size < 1 or linger < 0:
            raise ConfigError("batch size must be >= 1 and linger >= 0")
        self._send, self._key, self.size, self.linger = send, key, size, linger
        self._after_send = after_send
        self._queue: queue.SimpleQueue[tuple[T, Future[None]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.batches = 0
        self.items = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[None]:
        future: Future[None] = Future()
        with self._lock:  # never behind the close marker, where nobody would send it
            if not self._closed:
                self._queue.put((item, future))
                return future
        future.set_exception(ConfigError("the batcher is closed"))
        return future

    def close(self) -> None:
        """Send what was submitted, then stop the sender thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _collect(self, first: tuple[T, Future[None]]) -> tuple[list[tuple[T, Future[None]]], bool]:
        batch = [first]
        deadline = time.monotonic() + self.linger
        while len(batch) < self.size:
            remaining = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    def _run(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            if first is None:
                break
            batch, closing = self._collect(first)
            self._dispatch(batch)

    def _dispatch(self, batch: list[tuple[T, Future[None]]]) -> None:
        unique: dict[str, T] = {}
        for item, _ in batch:
            unique.setdefault(self._key(item), item)
        items = list(unique.values())
        try:
            outcomes: Sequence[BaseException | None] = self._send(items)
            if len(outcomes) != len(items):
                raise RuntimeError(f"send returned {len(outcomes)} outcomes for {len(items)} items")
        except BaseException as exc:  # a bug in send: fail the batch (retried), never hang the handlers
            outcomes = [exc] * len(items)
        by_key = {self._key(item): outcome for item, outcome in zip(items, outcomes, strict=True)}
        with self._lock:
            self.batches += 1
            self.items += len(items)
        if self._after_send is not None:
            try:
                self._after_send(items, outcomes)
            except Exception:  # a broken hook must not leave the handlers waiting
                log.exception("%s: after_send hook failed", self._thread.name)
        for item, future in batch:
            outcome = by_key[self._key(item)]
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)
