"""Poison events that kill their consumer's process, on both backends and in every mode, with real
processes: an event whose handler has its process SIGKILLed is dead-lettered as ``AbandonedDelivery``
after ``max(2, max_attempts)`` deaths (on Pulsar counted in the subscription's attempt ledger: the
broker's redelivery count stays 0 after a consumer's death), every other event is delivered and none is
dead-lettered; and graceful restarts of the consumer mid-stream blame nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edbus import Bus, Mode, StartAt
from edbus.backends.base import dlq_topic
from tests.conftest import eventually
from tests.events import SEQ, Seq

ROOT = Path(__file__).resolve().parent.parent
MODES = ["key_ordered", "shared", "exclusive"]
COUNT = 30
POISON = 7
pytestmark = pytest.mark.slow


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.workers", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def deliveries(path: Path) -> list[dict[str, int]]:
    """What the worker's handler logged: one line per delivery it handled (``n``, ``attempt``, ...)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def handled(path: Path) -> list[int]:
    return [d["n"] for d in deliveries(path)]


def publish(url: str, mode: str, count: int, keys: int) -> list[str]:
    with Bus.from_url(url) as bus:
        bus.backend.subscribe("seq", "s", Mode(mode), StartAt("earliest"))
        return bus.publish_many("seq", [(SEQ, Seq(f"k{n % keys}", n, "p")) for n in range(count)])


def backlog_and_dead(url: str) -> tuple[int, int]:
    with Bus.from_url(url) as bus:
        [stats] = bus.backend.subscriptions("seq")
        return stats.backlog, stats.dead_lettered


def ledger_records(url: str) -> dict[str, bytes]:
    """The live records of the subscription's attempt ledger (Pulsar), read raw from its topic."""
    import pulsar

    from edbus.backends.pulsar.attempts import attempts_topic
    from edbus.backends.pulsar.connection import PulsarConfig

    config = PulsarConfig.parse(url)
    client = pulsar.Client(config.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        reader = client.create_reader(config.full(attempts_topic(config.prefix + "seq", "s")),
                                      pulsar.MessageId.earliest, is_read_compacted=True)
        live: dict[str, bytes] = {}
        while reader.has_message_available():
            msg = reader.read_next(10_000)
            if msg.data():
                live[msg.partition_key()] = msg.data()
            else:
                live.pop(msg.partition_key(), None)
        return live
    finally:
        client.close()


@pytest.mark.parametrize("mode", MODES)
def test_an_event_that_sigkills_its_consumer_is_dead_lettered_as_abandoned_after_max_attempts_deaths_and_no_other(
        url: str, tmp_path: Path, mode: str) -> None:
    ids = publish(url, mode, COUNT, keys=5)
    log = tmp_path / "c.log"
    exits: list[int] = []
    for _ in range(8):  # a process manager restarting the consumer each time it dies
        proc = spawn("consume", "--url", url, "--log", str(log), "--mode", mode, "--kill-on", str(POISON),
                     "--max-attempts", "3", "--lease", "1", "--idle", "2", "--batch-size", "16")
        _out, err = proc.communicate(timeout=60)
        exits.append(proc.returncode)
        assert proc.returncode in (0, -signal.SIGKILL), err[-2000:]
        if proc.returncode == 0 and backlog_and_dead(url)[0] == 0:
            break
    assert exits.count(-signal.SIGKILL) == 3 and exits[-1] == 0, exits  # max(2, max_attempts) deaths, then done
    assert backlog_and_dead(url) == (0, 1)
    with Bus.from_url(url) as bus:
        dead = bus.backend.read(dlq_topic("seq", "s"), StartAt(), 10)
    assert [m.record.id for m in dead] == [ids[POISON]]  # no batch-mate of the poison dead-lettered
    assert dead[0].record.headers["edbus_dlq_error_type"] == "edbus.errors.AbandonedDelivery"
    assert set(handled(log)) == set(range(COUNT)) - {POISON}  # every other event delivered
    if url.startswith("pulsar"):
        # the dead consumers' records are swept by the next consumer to open the ledger: it does not grow
        with Bus.from_url(url) as bus:
            bus.backend.fetch("seq", "s", "sweeper", 1, 1.0)
        assert ledger_records(url) == {}


@pytest.mark.parametrize("mode", MODES)
def test_graceful_restarts_of_the_consumer_mid_stream_count_no_attempt_and_dead_letter_nothing(
        url: str, tmp_path: Path, mode: str) -> None:
    count = 150
    publish(url, mode, count, keys=50)  # many keys: more groups than handler threads, some never start
    log = tmp_path / "c.log"
    for _ in range(4):  # SIGTERM: the runtime finishes what runs, releases what it leased, closes
        before = len(handled(log))
        proc = spawn("consume", "--url", url, "--log", str(log), "--mode", mode, "--delay", "0.02",
                     "--max-attempts", "1", "--batch-size", "32", "--lease", "1")
        eventually(lambda: len(handled(log)) >= before + 10, timeout=30)  # noqa: B023 - used at once
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
    # (lease 1 s: an embedded exclusive subscription stays its last consumer's until its lease expires)
    proc = spawn("consume", "--url", url, "--log", str(log), "--mode", mode, "--max-attempts", "1", "--idle", "2",
                 "--lease", "1")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert set(handled(log)) == set(range(count))
    # what a stopping consumer had leased but not run was released: every delivery is a first attempt
    assert sorted({d["attempt"] for d in deliveries(log)}) == [1]
    assert backlog_and_dead(url) == (0, 0)  # max(2, 1) abandoned deliveries would dead-letter: none counted
    if url.startswith("pulsar"):
        assert ledger_records(url) == {}  # a graceful close leaves nothing behind
