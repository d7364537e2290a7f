"""The consumer runtime: handlers, retries with backoff, dead letters for failures and bad input,
key order under concurrency, graceful stop, fatal errors and middleware."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from edbus import Backoff, Bus, Event, Middleware
from edbus.backends import Record, dlq_topic
from edbus.bus import current_traceparent
from edbus.errors import ConfigError, PermanentError, StoreUnavailableError
from tests.conftest import eventually
from tests.events import CATALOG_CHANGED, SEQ, CourseInfo, Seq, course

ROOT = Path(__file__).resolve().parent.parent


def dead_letters(bus: Bus, topic: str = "t", sub: str = "s") -> list[Record]:
    return [m.record for m in bus.backend.read(dlq_topic(topic, sub), __import__("edbus").StartAt(), 100)]


def test_handler_receives_typed_events_and_acks_them(bus: Bus) -> None:
    bus.publish_many("t", [(CATALOG_CHANGED, course(i)) for i in range(20)])
    consumer = bus.consumer("t", "s")
    got: list[CourseInfo] = []
    consumer.handler(CATALOG_CHANGED)(lambda e: got.append(e.data))
    assert consumer.run(max_events=20, install_signals=False) == 20
    assert sorted(c.name for c in got) == sorted(f"Course {i}" for i in range(20))
    eventually(lambda: bus.backend.subscriptions("t")[0].backlog == 0, timeout=5)  # Pulsar's stats lag acks
    assert bus.metrics.snapshot()["acked"] == 20


def test_failing_handler_is_retried_with_backoff_then_dead_lettered_with_traceback(bus: Bus) -> None:
    bus.publish("t", SEQ, Seq("a", 1))
    consumer = bus.consumer("t", "s", max_attempts=3, backoff=Backoff(base=0.05, jitter=0))
    attempts: list[int] = []

    @consumer.handler(SEQ)
    def fail(event: Event[Seq]) -> None:
        attempts.append(event.attempt)
        raise ValueError(f"bad value {event.data.n}")

    consumer.run(max_events=1, install_signals=False)
    assert attempts == [1, 2, 3]
    [dead] = dead_letters(bus)
    assert dead.headers["edbus_dlq_error_type"] == "builtins.ValueError"
    assert dead.headers["edbus_dlq_error_message"] == "bad value 1"
    assert "raise ValueError" in dead.headers["edbus_dlq_traceback"]
    history = json.loads(dead.headers["edbus_dlq_history"])
    assert [h["attempt"] for h in history] == [1, 2, 3]
    assert history[1]["at"] - history[0]["at"] >= 0.05  # the backoff was waited
    eventually(lambda: (lambda s: s.backlog == 0 and s.dead_lettered == 1)(bus.backend.subscriptions("t")[0]),
               timeout=5)  # Pulsar's stats lag acks


def test_a_handler_raising_permanent_error_is_dead_lettered_at_once_and_the_next_event_goes_on(bus: Bus) -> None:
    class Refused(PermanentError):
        pass

    bus.publish_many("t", [(SEQ, Seq("a", 1)), (SEQ, Seq("a", 2))])
    consumer = bus.consumer("t", "s", max_attempts=5, backoff=Backoff(base=0.05, jitter=0))
    attempts: list[tuple[int, int]] = []

    @consumer.handler(SEQ)
    def handle(event: Event[Seq]) -> None:
        attempts.append((event.data.n, event.attempt))
        if event.data.n == 1:
            raise Refused("the LRS said 400: bad statement")

    consumer.run(max_events=2, install_signals=False)
    assert attempts == [(1, 1), (2, 1)]
    [dead] = dead_letters(bus)
    assert dead.headers["edbus_dlq_error_message"] == "the LRS said 400: bad statement"
    assert [h["attempt"] for h in json.loads(dead.headers["edbus_dlq_history"])] == [1]


def test_poison_event_does_not_block_other_keys(bus: Bus) -> None:
    bus.publish_many("t", [(SEQ, Seq("poison", 0))] + [(SEQ, Seq(f"k{i}", i)) for i in range(30)])
    consumer = bus.consumer("t", "s", max_attempts=50, backoff=Backoff(base=0.2))
    done = []

    @consumer.handler(SEQ)
    def handle(event: Event[Seq]) -> None:
        if event.data.key == "poison":
            raise RuntimeError("poison")
        done.append(event.data.n)

    thread = threading.Thread(target=consumer.run, kwargs={"install_signals": False})
    thread.start()
    eventually(lambda: len(done) == 30, timeout=10)
    consumer.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_malformed_bytes_go_to_the_dead_letter_topic_and_the_consumer_goes_on(bus: Bus) -> None:
    bus.publish("t", SEQ, Seq("a", 1))
    [(good, _, _)] = list(bus.read("t"))
    bad = Record("bad-1", SEQ.name, "a", dict(good.record.headers, ce_id="bad-1"), b"\xff\xff\xff")
    unknown = Record("bad-2", "org.openedx.nobody.knows.this.v1", "b",
                     dict(good.record.headers, ce_id="bad-2", ce_type="org.openedx.nobody.knows.this.v1"), b"")
    bus.backend.append("t", [bad, unknown])
    bus.publish("t", SEQ, Seq("a", 2))
    consumer = bus.consumer("t", "s")
    seen = []
    consumer.handler(SEQ)(lambda e: seen.append(e.data.n))
    consumer.run(max_events=4, install_signals=False)
    assert seen == [1, 2]
    reasons = {r.id: r.headers["edbus_dlq_error_message"] for r in dead_letters(bus)}
    assert "does not decode" in reasons["bad-1"]
    assert "unknown event type" in reasons["bad-2"]
    assert all(json.loads(r.headers["edbus_dlq_history"])[0]["type"] == "edbus.errors.DecodeError"
               for r in dead_letters(bus))


def test_events_of_types_without_a_handler_are_acked_and_skipped(bus: Bus) -> None:
    bus.publish_many("t", [(SEQ, Seq("a", 1)), (CATALOG_CHANGED, course(1)), (SEQ, Seq("a", 2))])
    consumer = bus.consumer("t", "s")
    seen = []
    consumer.handler(SEQ)(lambda e: seen.append(e.data.n))
    assert consumer.run(max_events=3, install_signals=False) == 3
    assert seen == [1, 2] and dead_letters(bus) == []


def test_key_order_holds_with_concurrent_handlers_in_one_process(bus: Bus) -> None:
    bus.publish_many("t", [(SEQ, Seq(f"k{n % 7}", n)) for n in range(700)])
    consumer = bus.consumer("t", "s", concurrency=8, batch=50)
    by_key: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    @consumer.handler(SEQ)
    def handle(event: Event[Seq]) -> None:
        with lock:
            by_key[event.data.key].append(event.data.n)

    consumer.run(max_events=700, install_signals=False)
    assert sum(map(len, by_key.values())) == 700
    assert all(ns == sorted(ns) for ns in by_key.values())


def test_events_published_by_a_handler_join_the_handled_events_trace(bus: Bus) -> None:
    bus.publish("t", SEQ, Seq("a", 1), traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    consumer = bus.consumer("t", "s")

    @consumer.handler(SEQ)
    def relay(event: Event[Seq]) -> None:
        assert current_traceparent() == event.envelope.traceparent
        bus.publish("out", SEQ, Seq("b", 2))

    consumer.run(max_events=1, install_signals=False)
    [(_, envelope, _)] = list(bus.read("out"))
    assert envelope.traceparent is not None and envelope.traceparent.split("-")[1] == "ab" * 16


def test_a_batch_published_by_a_handler_joins_its_trace_and_one_published_outside_starts_one_per_event(
        bus: Bus) -> None:
    bus.publish("t", SEQ, Seq("a", 1), traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    consumer = bus.consumer("t", "s")
    consumer.handler(SEQ)(lambda event: bus.publish_many("out", [(SEQ, Seq("b", n)) for n in range(20)]))
    consumer.run(max_events=1, install_signals=False)
    bus.publish_many("out", [(SEQ, Seq("c", n)) for n in range(20)])
    parents = [envelope.traceparent or "" for _, envelope, _ in bus.read("out")]
    inside, outside = parents[:20], parents[20:]
    assert all(p.split("-")[1] == "ab" * 16 for p in inside) and len({p.split("-")[2] for p in inside}) == 20
    assert len({p.split("-")[1] for p in outside}) == 20 and "ab" * 16 not in {p.split("-")[1] for p in outside}


def test_publish_headers_of_a_broken_middleware_are_logged_and_never_replace_the_envelope(
        bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    class Overwrites(Middleware):
        def publish_headers(self, topic: str, count: int) -> dict[str, list[str]]:
            return {"ce_id": ["x"] * count}

    class Miscounts(Middleware):
        def publish_headers(self, topic: str, count: int) -> dict[str, list[str]]:
            return {"x-team": ["a"]}

    odd = Bus(bus.backend, middleware=[Overwrites(), Miscounts(), *bus.middleware.middleware])
    ids = odd.publish_many("t", [(SEQ, Seq("a", n)) for n in range(3)])
    assert [envelope.id for _, envelope, _ in odd.read("t")] == ids and len(set(ids)) == 3
    assert all(envelope.traceparent for _, envelope, _ in odd.read("t"))
    assert "header 'ce_id' is the codec's own" in caplog.text and "1 values of header 'x-team' for 3" in caplog.text


def test_a_failing_middleware_hook_is_logged_and_loses_nothing(bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Middleware):
        def before_process(self, delivery: object, event: object) -> None:
            raise RuntimeError("exporter down")

    broken = Bus(bus.backend, middleware=[Broken(), *bus.middleware.middleware])
    broken.publish("t", SEQ, Seq("a", 1))
    consumer = broken.consumer("t", "s")
    seen = []
    consumer.handler(SEQ)(lambda e: seen.append(e.data.n))
    consumer.run(max_events=1, install_signals=False)
    assert seen == [1] and "Broken.before_process failed" in caplog.text


def test_registering_two_handlers_for_one_type_is_refused(bus: Bus) -> None:
    consumer = bus.consumer("t", "s")
    consumer.add(SEQ, print)
    with pytest.raises(ConfigError, match="already registered"):
        consumer.add(SEQ, print)
    with pytest.raises(ConfigError, match="unknown mode"):
        bus.consumer("t", "s", mode="round_robin")


def test_missing_and_corrupt_stores_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="no edbus store at"):
        Bus.from_url(f"sqlite:///{tmp_path}/missing.db", create=False)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreUnavailableError, match="is corrupt"):
        Bus.from_url(f"sqlite:///{corrupt}")
    with pytest.raises(ConfigError, match="bad URL"):
        Bus.from_url("redis://localhost")


def test_sigterm_finishes_and_acks_in_flight_events_then_exits_zero(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bus.db"
    bus = Bus.from_url(url)
    bus.publish_many("seq", [(SEQ, Seq(f"k{i}", i)) for i in range(200)])
    log = tmp_path / "c.log"
    proc = subprocess.Popen([sys.executable, "-m", "tests.workers", "consume", "--url", url, "--log", str(log),
                             "--delay", "0.05", "--concurrency", "4"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    eventually(lambda: log.exists() and len(log.read_text().splitlines()) >= 10, timeout=30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    handled = len(log.read_text().splitlines())
    [stats] = bus.backend.subscriptions("seq")
    assert stats.in_flight == 0  # everything it took was finished and acked
    assert stats.backlog == 200 - handled  # and nothing it handled is left unacked


def test_full_disk_refuses_the_publish_and_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    bus = Bus.from_url(f"sqlite:///{tmp_path}/full.db")
    bus.publish("t", SEQ, Seq("a", 0))
    pages = bus.backend.conn.db.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[attr-defined]
    bus.backend.conn.db.execute(f"PRAGMA max_page_count={pages + 8}")  # type: ignore[attr-defined]
    acked = []
    with pytest.raises(StoreUnavailableError, match="is full"):
        for n in range(1, 10_000):
            acked.append(bus.publish("t", SEQ, Seq("a", n, "x" * 500)))
    stored = {m.record.id for m, _, _ in bus.read("t")}
    assert set(acked) <= stored and len(stored) == len(acked) + 1  # the refused one was not stored
    db = bus.backend.conn.db  # type: ignore[attr-defined]
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_handler_raising_a_base_exception_is_retried_and_dead_lettered_not_looped(bus: Bus) -> None:
    bus.publish("t", SEQ, Seq("a", 1))
    consumer = bus.consumer("t", "s", max_attempts=2, backoff=Backoff(base=0.01))
    calls = []

    @consumer.handler(SEQ)
    def cancelled(event: Event[Seq]) -> None:
        calls.append(event.attempt)
        raise SystemExit("worker told to exit")

    consumer.run(max_events=1, install_signals=False)
    assert calls == [1, 2]
    [dead] = dead_letters(bus)
    assert dead.headers["edbus_dlq_error_type"] == "builtins.SystemExit"


def test_subscription_names_with_dots_are_refused_so_dead_letter_topics_cannot_collide(bus: Bus) -> None:
    with pytest.raises(ConfigError, match="bad subscription name"):
        bus.consumer("a", "b.c")


def test_read_only_store_refuses_the_publish_with_one_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ro.db"
    with Bus.from_url(url) as bus:
        bus.publish("t", SEQ, Seq("a", 1))
    store = tmp_path / "ro.db"
    subprocess.run(["chattr", "+i", str(store)], check=True)  # read-only even for root
    try:
        with pytest.raises(StoreUnavailableError, match="is read-only"), Bus.from_url(url) as bus:
            bus.publish("t", SEQ, Seq("a", 2))
    finally:
        subprocess.run(["chattr", "-i", str(store)], check=True)
    with Bus.from_url(url) as bus:
        assert [d["n"] for _, _, d in bus.read("t")] == [1]


def test_class_based_handlers_are_registered_with_add_handler(bus: Bus) -> None:
    class Counter:
        event_type = SEQ

        def __init__(self) -> None:
            self.seen: list[int] = []

        def handle(self, event: Event[Seq]) -> None:
            self.seen.append(event.data.n)

    bus.publish_many("t", [(SEQ, Seq("k", n)) for n in range(3)])
    consumer = bus.consumer("t", "s")
    counter = Counter()
    consumer.add_handler(counter)
    consumer.run(max_events=3, install_signals=False)
    assert counter.seen == [0, 1, 2]


def test_bus_administration_uses_the_bus_topic_names_with_their_prefix(url: str) -> None:
    with Bus.from_url(url, topic_prefix="stage-") as bus:
        bus.publish_many("t", [(SEQ, Seq("a", i)) for i in range(3)])
        consumer = bus.consumer("t", "s")
        seen: list[int] = []
        consumer.handler(SEQ)(lambda e: seen.append(e.data.n))
        consumer.run(max_events=3, install_signals=False)
        assert [s.subscription for s in bus.subscriptions("t")] == ["s"]
        assert any(t.topic == "stage-t" for t in bus.topics())
        bus.seek("t", "s", "earliest")  # replay
        consumer.run(max_events=3, install_signals=False)
        assert seen == [0, 1, 2, 0, 1, 2]
        bus.unsubscribe("t", "s")
        eventually(lambda: not bus.subscriptions("t"), timeout=5)


def test_a_run_processes_exactly_max_events_and_the_next_run_the_rest(bus: Bus) -> None:
    bus.publish_many("t", [(SEQ, Seq(f"k{i % 5}", i)) for i in range(40)])
    consumer = bus.consumer("t", "s", concurrency=4)
    consumer.handler(SEQ)(lambda e: None)
    for _ in range(10):
        assert consumer.run(max_events=3, install_signals=False) == 3
    assert consumer.run(max_events=10, install_signals=False) == 10
    assert consumer.processed == 40
