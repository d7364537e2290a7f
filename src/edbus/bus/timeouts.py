"""Per-handler time limits (``handler_timeout``).

A handler running longer than its limit is logged and its event released for retry (counted as a
failed attempt, so an event that always hangs ends in the dead-letter topic). Its thread is then asked
to stop by an exception raised in it (``HandlerTimedOut``); Python delivers it only while the thread
runs Python code, so a handler blocked in a system call (a socket read without a timeout) cannot be
freed. Then the consumer stops and the process must exit with ``EXIT_HANDLER_STUCK`` for its supervisor
to start a fresh one (``exit_for_supervisor``): a stuck thread cannot be killed, and it would keep
an interpreter that tried to exit normally waiting for ever.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import sys
import threading
import time
from typing import NoReturn

from edbus.backends.base import Delivery
from edbus.errors import StuckHandlerError

__all__ = ["EXIT_HANDLER_STUCK", "HandlerTimedOut", "RunningHandlers", "StuckHandlerError", "exit_for_supervisor"]

log = logging.getLogger("edbus.consumer")
EXIT_HANDLER_STUCK = 75  # EX_TEMPFAIL: a supervisor restarts the process
_FREE_GRACE_MAX = 5.0  # seconds given to a timed-out handler's thread to come back


class HandlerTimedOut(BaseException):  # raised in the handler's thread, like KeyboardInterrupt
    """Raised inside a handler that ran past ``handler_timeout`` (a BaseException: ``except Exception`` in
    the handler does not swallow it)."""


@dataclasses.dataclass(slots=True)
class _Run:
    delivery: Delivery
    thread: int
    started: float
    timed_out_at: float = 0.0  # monotonic; 0 while within its limit


class RunningHandlers:
    """Which worker thread runs which delivery since when; finds the ones past the limit."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.grace = min(timeout, _FREE_GRACE_MAX)
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}

    def begin(self, delivery: Delivery) -> None:
        with self._lock:
            self._runs[id(delivery)] = _Run(delivery, threading.get_ident(), time.monotonic())

    def end(self, delivery: Delivery) -> None:
        with self._lock:
            self._runs.pop(id(delivery), None)

    def overdue(self) -> list[Delivery]:
        """Deliveries whose handler passed its limit just now; each is asked to stop (once)."""
        now = time.monotonic()
        late = []
        with self._lock:  # ``end`` cannot run meanwhile: the exception lands in a handler still running
            for run in self._runs.values():
                if not run.timed_out_at and now - run.started > self.timeout:
                    run.timed_out_at = now
                    late.append(run.delivery)
                    _raise_in(run.thread)
        return late

    def busy(self) -> bool:
        """Whether a handler within its limit is running."""
        with self._lock:
            return any(not run.timed_out_at for run in self._runs.values())

    def stuck(self) -> Delivery | None:
        """A timed-out handler whose thread did not come back within the grace period."""
        now = time.monotonic()
        with self._lock:
            for run in self._runs.values():
                if run.timed_out_at and now - run.timed_out_at > self.grace:
                    return run.delivery
        return None


def _raise_in(thread: int) -> None:
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(HandlerTimedOut))
    if done > 1:  # cannot happen with a live thread id; undo rather than hit another thread
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), None)


def exit_for_supervisor(error: StuckHandlerError) -> NoReturn:
    """End the process at once with ``EXIT_HANDLER_STUCK`` (a normal exit would wait for the stuck thread
    for ever). The consumer has already settled or released every event it held."""
    log.critical("%s; exiting with status %d for the supervisor to restart the process", error,
                 EXIT_HANDLER_STUCK)
    for handler in logging.getLogger().handlers + logging.getLogger("edbus").handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(EXIT_HANDLER_STUCK)
