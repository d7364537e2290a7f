"""Error history beyond 100 attempts: the history is trimmed (the first failure, a marker counting the dropped
ones, the latest), and ``Delivery.abandoned`` still counts only attempts that ended with no outcome. With the
old ``attempt - 1 - len(history)`` every retry past the 100th looked abandoned (run alone by the runtime,
and counted towards the poison rule).
"""

from __future__ import annotations

import subprocess
import sys
import time

from edbus.backends import Backend, Delivery, ErrorInfo, Mode, Record, StartAt, open_backend
from edbus.backends.base import HISTORY_TRIMMED, add_failure, failures
from tests.conftest import eventually
from tests.contract.test_backend_contract import _DIES_HOLDING_A_LEASE, ROOT

FAILURES = 130  # past the 100 entries a history keeps


def _error(attempt: int) -> ErrorInfo:
    return ErrorInfo("builtins.RuntimeError", f"failure {attempt}", "Traceback ...", time.time(), attempt)


def _fail(backend: Backend, times: int, first_attempt: int = 1) -> Delivery:
    """Fetch the one event and nack it with an error ``times`` times; returns the delivery after that."""
    for attempt in range(first_attempt, first_attempt + times):
        [d] = eventually(lambda: backend.fetch("t", "s", "c", 10, 30), timeout=10)
        assert d.attempt == attempt and d.abandoned == 0, (d.attempt, d.abandoned, len(d.history))
        backend.nack(d, 0, _error(attempt))
    [d] = eventually(lambda: backend.fetch("t", "s", "c", 10, 30), timeout=10)
    return d


def test_a_history_keeps_the_first_a_count_of_the_dropped_and_the_latest_failures() -> None:
    history: tuple[ErrorInfo, ...] = ()
    for attempt in range(1, 251):
        history = add_failure(history, _error(attempt))
        assert failures(history) == attempt and len(history) <= 100
    assert history[0].message == "failure 1" and history[-1].message == "failure 250"
    assert history[1].type == HISTORY_TRIMMED and history[1].attempt == 250 - 99
    assert [h.message for h in history[2:]] == [f"failure {n}" for n in range(153, 251)]


def test_more_than_a_hundred_failed_attempts_are_not_counted_as_abandoned(
        url: str, backend: Backend) -> None:
    backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
    backend.append("t", [Record("e1", "org.openedx.test.item.made.v1", "k", {"ce_id": "e1"}, b"p")])
    d = _fail(backend, FAILURES)
    assert d.attempt == FAILURES + 1 and d.abandoned == 0
    assert len(d.history) == 100 and d.history[0].message == "failure 1"
    assert d.history[-1].message == f"failure {FAILURES}"


def test_the_count_survives_a_new_holder_and_a_real_abandonment_after_it_still_counts(
        url: str, backend: Backend) -> None:
    backend.subscribe("t", "s", Mode.KEY_ORDERED, StartAt())
    backend.append("t", [Record("e1", "org.openedx.test.item.made.v1", "k", {"ce_id": "e1"}, b"p")])
    first = open_backend(url)  # another holder: its failures reach this one through the store / attempt ledger
    try:
        d = _fail(first, 105)
        first.nack(d, 0, _error(106))
    finally:
        first.close()
    # a process that takes the event (its 107th attempt) and dies holding it
    done = subprocess.run([sys.executable, "-c", _DIES_HOLDING_A_LEASE, url], check=True, timeout=120, cwd=ROOT,
                          capture_output=True, text=True)
    assert done.stdout.split() == ["e1:107"]
    [again] = eventually(lambda: backend.fetch("t", "s", "heir", 10, 30), timeout=30)
    assert again.attempt == 108 and again.abandoned == 1
    assert failures(again.history) == 106 and again.history[-1].message == "failure 106"
