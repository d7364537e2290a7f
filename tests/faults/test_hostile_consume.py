"""Hostile input at consume, end to end through a real bus: records injected with the low-level API
(``backend.append``: any bytes, any headers) are each dead-lettered at once with a clear ``DecodeError``
(or given to a fallback handler when they are valid events of a type without a handler); the consumer
neither crashes nor hangs; valid events on other keys, and on the poison's own key after it, are all
delivered in order. Fuzzed with hypothesis (derandomized, bounded); a smaller fixed set on Pulsar."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edbus import Backoff, Bus, Event, EventType, Rule, StartAt
from edbus.backends import Record, dlq_topic
from tests.conftest import backend_url
from tests.events import SEQ, Seq


@attrs.frozen
class SeqV2:
    """SEQ's second schema version: an optional field added (FORWARD-compatible)."""

    key: str
    n: int
    producer: str = ""
    note: str | None = None


@attrs.frozen
class SeqText:
    """An incompatible version of SEQ (``n`` became a string), registered through a topic with no rule."""

    key: str
    n: str


SEQ_V2 = EventType(SEQ.name, SeqV2, key="key")
SEQ_TEXT = EventType(SEQ.name, SeqText, key="key")
OTHER = EventType("org.openedx.test.hostile.other.made.v1", Seq, key="key")  # registered, no handler
UNKNOWN = "org.openedx.nobody.knows.this.v1"


def zigzag(n: int) -> bytes:
    """Avro's long encoding."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return bytes(out + bytes([low]))
        out.append(low | 0x80)


@dataclasses.dataclass(frozen=True, slots=True)
class Templates:
    """Records of each schema version, encoded by the bus itself, to build hostile ones from."""

    v1: Record
    v2: Record
    v3: Record
    other: Record


def prepare(bus: Bus) -> Templates:
    """Register SEQ v1, v2 (compatible) and v3 (incompatible, through a topic with no rule)."""
    bus.registry.set_rule(bus.topic("lax"), Rule.NONE)
    records = [bus.codec.encode(bus.topic("scratch"), SEQ, Seq("k", 1, "p" * 40)),
               bus.codec.encode(bus.topic("scratch"), SEQ_V2, SeqV2("k", 1, "p", "a note")),
               bus.codec.encode(bus.topic("lax"), SEQ_TEXT, SeqText("k", "one")),
               bus.codec.encode(bus.topic("scratch"), OTHER, Seq("k", 1))]
    assert [r.headers["ce_schemaversion"] for r in records] == ["1", "2", "3", "1"]
    return Templates(*records)


def forged(template: Record, key: str, event_id: str, *, payload: bytes | None = None,
           type: str | None = None, **headers: str | None) -> Record:
    """A copy of ``template`` with another id and key, and some headers replaced (None: dropped)."""
    out = dict(template.headers, ce_id=event_id)
    for name, value in headers.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return Record(event_id, type or template.type, key, out, template.payload if payload is None else payload)


# kinds that must be dead-lettered, whatever the drawn details; the others may happen to decode
MUST_FAIL = {"truncated", "trailing", "missing_header", "type_mismatch", "unknown_type", "unknown_version",
             "v2_bytes_as_v1", "v1_bytes_as_v2", "incompatible_version", "no_handler_bad_version"}


@st.composite
def hostile(draw: st.DrawFn, t: Templates, key: str, event_id: str) -> tuple[str, Record]:
    kind = draw(st.sampled_from(sorted(MUST_FAIL | {"random_bytes", "garbled_header"})))
    v1 = t.v1
    if kind == "random_bytes":
        return kind, forged(v1, key, event_id, payload=draw(st.binary(max_size=200)))
    if kind == "truncated":
        return kind, forged(v1, key, event_id, payload=v1.payload[:draw(st.integers(0, len(v1.payload) - 1))])
    if kind == "trailing":
        return kind, forged(v1, key, event_id, payload=v1.payload + draw(st.binary(min_size=1, max_size=50)))
    if kind == "missing_header":
        dropped = draw(st.sets(st.sampled_from(["ce_id", "ce_type", "ce_time", "ce_source"]), min_size=1))
        return kind, forged(v1, key, event_id, **dict.fromkeys(dropped))
    if kind == "garbled_header":
        name = draw(st.sampled_from(["ce_time", "ce_schemaversion", "ce_minorversion", "ce_specversion",
                                     "traceparent", "content-type", "ce_source"]))
        return kind, forged(v1, key, event_id, **{name: draw(st.text(max_size=40))})
    if kind == "type_mismatch":
        return kind, forged(v1, key, event_id, ce_type=OTHER.name)
    if kind == "unknown_type":
        return kind, forged(v1, key, event_id, type=UNKNOWN, ce_type=UNKNOWN)
    if kind == "unknown_version":
        return kind, forged(v1, key, event_id, ce_schemaversion=str(draw(st.sampled_from([0, -1, 4, 99, 10**30]))))
    if kind == "v2_bytes_as_v1":
        return kind, forged(t.v2, key, event_id, ce_schemaversion="1")
    if kind == "v1_bytes_as_v2":
        return kind, forged(v1, key, event_id, ce_schemaversion="2")
    if kind == "incompatible_version":
        return kind, forged(t.v3, key, event_id)
    assert kind == "no_handler_bad_version"
    return kind, forged(t.other, key, event_id, ce_schemaversion=draw(st.sampled_from(["x", "", "1.5", "9" * 5000])))


@dataclasses.dataclass
class Outcome:
    delivered: list[tuple[str | None, int, str]]  # (key, n, event id) in handling order
    dead: dict[str, Record]  # event id -> dead-letter record
    seconds: float


def consume(bus: Bus, topic: str, expected: int, *, mode: str = "key_ordered", fallback: list[Event[Any]] | None = None,
            sub: str = "s", timeout: float = 60.0) -> Outcome:
    """Run a consumer until ``expected`` events are settled; fail if it crashes or hangs."""
    consumer = bus.consumer(topic, sub, mode=mode, max_attempts=3, backoff=Backoff(base=0.01), concurrency=4)
    delivered: list[tuple[str | None, int, str]] = []
    lock = threading.Lock()
    if fallback is None:
        @consumer.handler(SEQ)
        def handle(event: Event[Seq]) -> None:
            with lock:
                delivered.append((event.key, event.data.n, event.id))
    else:
        consumer.add_fallback(fallback.append)
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run(max_events=expected, install_signals=False)
        except BaseException as exc:  # the consumer itself must never die of its input
            crashed.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        consumer.stop()
        thread.join(10)
        raise AssertionError(f"consumer hung: {consumer.processed} of {expected} settled in {timeout}s")
    assert not crashed, crashed
    dead = {m.record.id: m.record
            for m in bus.backend.read(bus.topic_prefix + dlq_topic(topic, sub), StartAt(), 10_000)}
    return Outcome(delivered, dead, time.monotonic() - started)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    b = Bus.from_url(backend_url("sqlite", tmp_path))
    yield b
    b.close()


def check_dead_letter(record: Record, original: Record) -> None:
    """Dead-lettered at once, with the original bytes and a short, clear error."""
    h = record.headers
    assert h["edbus_dlq_error_type"] == "edbus.errors.DecodeError", h["edbus_dlq_error_message"]
    assert h["edbus_dlq_attempts"] == "1"
    assert 0 < len(h["edbus_dlq_error_message"]) <= 2000
    assert record.payload == original.payload and record.type == original.type


# -- one test per bug found ----------------------------------------------------------------------

def test_an_unhandled_type_with_a_malformed_schema_version_header_is_dead_lettered_at_once(bus: Bus) -> None:
    # it raised ValueError, retried with backoff max_attempts times, holding its key meanwhile
    t = prepare(bus)
    topic = bus.topic("t")
    bad = [forged(t.other, "p", f"bad-{i}", ce_schemaversion=v) for i, v in enumerate(["x", "1.5", "9" * 5000])]
    bus.backend.append(topic, [*bad, bus.codec.encode(topic, SEQ, Seq("p", 1))])
    out = consume(bus, "t", expected=4)
    assert [n for _, n, _ in out.delivered] == [1]
    for record in bad:
        check_dead_letter(out.dead[record.id], record)
        assert "bad ce_schemaversion header" in out.dead[record.id].headers["edbus_dlq_error_message"]


def bomb_schema() -> dict[str, Any]:
    empty = {"type": "record", "name": "Nothing", "fields": []}
    return {"type": "record", "name": "Bomb", "fields": [{"name": "key", "type": "string"},
                                                         {"name": "items", "type": {"type": "array", "items": empty}}]}


@pytest.mark.parametrize("with_fallback", [True, False])
def test_a_writer_schema_with_an_array_of_zero_byte_items_is_dead_lettered_not_decoded(bus: Bus,
                                                                                     with_fallback: bool) -> None:
    # six bytes claimed two million items; the decoder built them all (2**62 would never end)
    name = "org.openedx.test.hostile.bomb.made.v1"
    version = bus.registry.register(bus.topic("t"), name, bomb_schema())  # a hostile writer's schema
    template = bus.codec.encode(bus.topic("t"), SEQ, Seq("k", 1))
    bomb = forged(template, "b", "bomb-1", type=name, ce_type=name, ce_schemaversion=str(version),
                  payload=zigzag(1) + b"b" + zigzag(2_000_000) + zigzag(0))
    bus.backend.append(bus.topic("t"), [bomb])
    got: list[Event[Any]] = []
    out = consume(bus, "t", expected=1, fallback=got if with_fallback else None, timeout=30)
    assert got == []
    check_dead_letter(out.dead["bomb-1"], bomb)
    assert "items: an array whose items encode to zero bytes" in out.dead["bomb-1"].headers["edbus_dlq_error_message"]


def test_a_naive_event_time_is_read_as_utc_and_a_non_string_header_is_dead_lettered_at_once(bus: Bus) -> None:
    # a naive ce_time reached handlers as a naive datetime; a non-string header value raised
    # TypeError, retried max_attempts times
    t = prepare(bus)
    topic = bus.topic("t")
    naive = forged(t.v1, "a", "naive-1", ce_time="2024-05-01T12:00:00")
    numeric = forged(t.v1, "b", "numeric-1", ce_time=12345)  # type: ignore[arg-type]
    bus.backend.append(topic, [naive, numeric])
    times: list[dt.datetime] = []
    consumer = bus.consumer("t", "s", max_attempts=3, backoff=Backoff(base=0.01))
    consumer.handler(SEQ)(lambda e: times.append(e.envelope.time))
    assert consumer.run(max_events=2, install_signals=False) == 2
    assert times == [dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)]
    [dead] = [m.record for m in bus.backend.read(dlq_topic(topic, "s"), StartAt(), 10)]
    check_dead_letter(dead, numeric)
    assert "bad envelope headers: TypeError" in dead.headers["edbus_dlq_error_message"]



@pytest.mark.parametrize("kind", ["sqlite", "pulsar"])
def test_a_schema_version_beyond_any_registry_is_dead_lettered_at_once(tmp_path: Path, kind: str) -> None:
    # on Pulsar the version went to the admin API, which answered 500 (NumberFormatException): a
    # StoreError, retried max_attempts times with backoff instead of a DecodeError at once
    with Bus.from_url(backend_url(kind, tmp_path)) as bus:
        t = prepare(bus)
        bad = [forged(t.v1, "a", "huge-1", ce_schemaversion=str(10**30)),
               forged(t.other, "b", "huge-2", ce_schemaversion=str(2**63))]
        bus.backend.append(bus.topic("t"), bad)
        out = consume(bus, "t", expected=2)
        for record in bad:
            check_dead_letter(out.dead[record.id], record)
            assert "no schema version" in out.dead[record.id].headers["edbus_dlq_error_message"] \
                or "unknown event type" in out.dead[record.id].headers["edbus_dlq_error_message"]

# -- fuzzed, end to end --------------------------------------------------------------------------

def interleaved(bus: Bus, topic: str, poison: list[tuple[str, Record]]) -> tuple[list[Record], dict[str, list[int]]]:
    """Before and after each poison record: valid events on three other keys, and one on the poison's
    own key after it. Returns the records in order and each key's expected sequence numbers."""
    full = bus.topic(topic)
    counter = itertools.count()
    records: list[Record] = []
    expected: dict[str, list[int]] = {}

    def valid(key: str) -> None:
        n = next(counter)
        records.append(bus.codec.encode(full, SEQ, Seq(key, n)))
        expected.setdefault(key, []).append(n)

    for i, (_, record) in enumerate(poison):
        valid(f"v{i % 3}")
        records.append(record)
        valid(record.key or "")
    valid("v0")
    return records, expected


def check(out: Outcome, poison: list[tuple[str, Record]], expected: dict[str, list[int]], *, ordered: bool,
          note: Callable[[str], None] = lambda _: None) -> None:
    """Every valid event delivered once (in per-key order when ``ordered``); every poison record either
    dead-lettered at once or, for kinds that may happen to decode, delivered."""
    valid = [(k, n) for k, n, i in out.delivered if not i.startswith("poison-")]
    by_key: dict[str, list[int]] = {}
    for key, n in valid:
        by_key.setdefault(key or "", []).append(n)
    if ordered:
        assert by_key == expected
    else:
        assert {k: sorted(v) for k, v in by_key.items()} == expected
    delivered_poison = {i for _, _, i in out.delivered if i.startswith("poison-")}
    for kind, record in poison:
        if record.id in out.dead:
            check_dead_letter(out.dead[record.id], record)
            note(f"{kind}: dead-lettered")
        else:
            assert kind not in MUST_FAIL and record.id in delivered_poison, (kind, record)
            note(f"{kind}: decoded and delivered")
    assert len(out.dead) + len(delivered_poison) == len(poison)


FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
runs = itertools.count()


@given(st.data())
@FUZZ
def test_hostile_records_are_dead_lettered_at_once_and_never_block_other_keys(bus: Bus, data: st.DataObject) -> None:
    t = prepare(bus)
    run = next(runs)
    count = data.draw(st.integers(1, 8), label="poison records")
    poison = [data.draw(hostile(t, f"p{i}", f"poison-{run}-{i}"), label=f"poison {i}") for i in range(count)]
    topic = f"fuzz{run}"
    records, expected = interleaved(bus, topic, poison)
    bus.backend.append(bus.topic(topic), records)
    out = consume(bus, topic, expected=len(records), timeout=60)
    check(out, poison, expected, ordered=True, note=event)


def fixed_set(t: Templates) -> list[tuple[str, Record]]:
    """One record of every kind, each with its own key (what the Pulsar and mode tests use)."""
    cases = [
        ("random_bytes", forged(t.v1, "p0", "poison-0", payload=b"\xff" * 1000)),
        ("truncated", forged(t.v1, "p1", "poison-1", payload=t.v1.payload[:5])),
        ("trailing", forged(t.v1, "p2", "poison-2", payload=t.v1.payload + b"\x00")),
        ("missing_header", forged(t.v1, "p3", "poison-3", ce_time=None, ce_source=None)),
        ("garbled_header", forged(t.v1, "p4", "poison-4", ce_time="yesterday")),
        ("type_mismatch", forged(t.v1, "p5", "poison-5", ce_type=OTHER.name)),
        ("unknown_type", forged(t.v1, "p6", "poison-6", type=UNKNOWN, ce_type=UNKNOWN)),
        ("unknown_version", forged(t.v1, "p7", "poison-7", ce_schemaversion="99")),
        ("v2_bytes_as_v1", forged(t.v2, "p8", "poison-8", ce_schemaversion="1")),
        ("v1_bytes_as_v2", forged(t.v1, "p9", "poison-9", ce_schemaversion="2")),
        ("incompatible_version", forged(t.v3, "p10", "poison-10")),
        ("no_handler_bad_version", forged(t.other, "p11", "poison-11", ce_schemaversion="x")),
        ("oversized_bytes", forged(t.v1, "p12", "poison-12", payload=zigzag(3) + b"k" * 3_000_000)),
    ]
    assert {kind for kind, _ in cases} >= MUST_FAIL
    return cases


@pytest.mark.parametrize("mode", ["key_ordered", "shared", "exclusive"])
def test_every_kind_of_hostile_record_is_dead_lettered_in_every_mode(bus: Bus, mode: str) -> None:
    t = prepare(bus)
    poison = fixed_set(t)
    records, expected = interleaved(bus, "t", poison)
    bus.backend.append(bus.topic("t"), records)
    out = consume(bus, "t", expected=len(records), mode=mode)
    check(out, poison, expected, ordered=mode != "shared")
    assert set(out.dead) == {r.id for _, r in poison}  # each of these fails, whatever the mode


def test_a_fallback_handler_gets_what_its_writer_schema_decodes_and_hostile_records_are_dead_lettered(bus: Bus) -> None:
    t = prepare(bus)
    poison = fixed_set(t)
    newer = forged(t.v2, "n", "newer-1")  # a valid event of the newer minor version
    records, _ = interleaved(bus, "t", poison)
    bus.backend.append(bus.topic("t"), [*records, newer])
    got: list[Event[Any]] = []
    out = consume(bus, "t", expected=len(records) + 1, fallback=got)
    # a fallback decodes with the writer's schema alone: the incompatible version is valid data for it
    assert set(out.dead) == {r.id for kind, r in poison if kind != "incompatible_version"}
    [v3] = [e for e in got if e.id == "poison-10"]
    assert v3.data == {"key": "k", "n": "one"}
    [v2] = [e for e in got if e.id == "newer-1"]
    assert v2.data == {"key": "k", "n": 1, "producer": "p", "note": "a note"}
    assert len(got) == len(records) - len(poison) + 2 and all(isinstance(e.data, dict) for e in got)


def test_a_newer_minor_version_is_projected_onto_an_older_reader_not_dead_lettered(bus: Bus) -> None:
    t = prepare(bus)
    bus.backend.append(bus.topic("t"), [forged(t.v2, "k", "newer-1")])
    out = consume(bus, "t", expected=1)
    assert out.delivered == [("k", 1, "newer-1")] and out.dead == {}


def test_an_event_over_the_producers_size_limit_is_still_delivered_by_a_consumer(bus: Bus) -> None:
    """The size limit is the producer's rule: a consumer delivers a valid event that another producer
    (with a higher limit) wrote, rather than dead-letter it."""
    big = Bus(bus.backend, max_event_bytes=8_000_000)
    big.publish("t", SEQ, Seq("k", 7, "x" * 5_000_000))
    out = consume(bus, "t", expected=1)
    assert [n for _, n, _ in out.delivered] == [7] and out.dead == {}


# -- the shared Pulsar broker: the fixed set --------------------------------------------------------

def test_hostile_records_are_dead_lettered_on_pulsar_and_valid_ones_delivered_in_key_order(tmp_path: Path) -> None:
    with Bus.from_url(backend_url("pulsar", tmp_path)) as bus:
        t = prepare(bus)
        poison = [(kind, r) for kind, r in fixed_set(t) if kind != "oversized_bytes"]  # Pulsar's limit: 5 MB
        records, expected = interleaved(bus, "t", poison)
        bus.backend.append(bus.topic("t"), records)
        out = consume(bus, "t", expected=len(records), timeout=90)
        check(out, poison, expected, ordered=True)
        assert set(out.dead) == {r.id for _, r in poison}


# -- found on the way ------------------------------------------------------------------------------

def test_a_consumer_runs_again_after_an_earlier_run_ended_at_max_events(bus: Bus) -> None:
    # max_events set the stop flag for good: a second run() returned at once (the memory test's
    # warm-up then measure needs two runs)
    bus.publish_many("t", [(SEQ, Seq("k", n)) for n in range(4)])
    consumer = bus.consumer("t", "s")
    seen: list[int] = []
    consumer.handler(SEQ)(lambda e: seen.append(e.data.n))
    assert consumer.run(max_events=2, install_signals=False) == 2
    assert consumer.run(max_events=2, install_signals=False) == 2  # max_events and the count are per run
    assert seen == [0, 1, 2, 3] and not consumer.stopping and consumer.processed == 4
