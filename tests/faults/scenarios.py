"""The scenarios, and one run of a scenario: producers and consumers as processes, faults from a seeded
schedule, a drain until caught up, then the checker on the histories and on what the store holds."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
import uuid
from pathlib import Path

from edbus import Bus, Mode, StartAt
from edbus.errors import StoreError
from tests.events import SEQ, Seq
from tests.faults.checker import Figures, Rules, check, markdown_row
from tests.faults.cluster import CLUSTER_FAULTS, PulsarCluster
from tests.faults.faults import Fleet, PulsarBroker, Worker
from tests.faults.history import HistoryWriter, now
from tests.faults.schedule import Fault, build_schedule

__all__ = ["SCENARIOS", "RunResult", "Scenario", "run"]

TOPIC, SUBSCRIPTION = "faults", "harness"


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    guarantee: str  # what it tests
    faults: tuple[str, ...]
    backends: tuple[str, ...] = ("sqlite", "pulsar")
    mode: str = "key_ordered"
    producers: int = 2
    consumers: int = 2
    rate: float = 200.0  # events/s per producer
    batch: int = 1  # events per publish
    ack_delay: float = 0.0  # seconds a publish is held after the store acked it
    keys: int = 8  # per producer
    mean_interval: float = 3.0  # seconds between faults
    down: tuple[float, float] = (0.0, 1.0)  # seconds a killed process stays down
    settle: float = 0.0  # seconds after a restart before the next fault (a late fault waits for it)
    consumer_batch: int = 32
    concurrency: int = 4
    lease: float = 3.0
    handler_delay: float = 0.0  # seconds each handler takes
    backlog: int = 0  # events published before any consumer starts
    slow_for: float = 0.0  # seconds of slow handling at the consumer's start
    slow_delay: float = 0.0
    peak_memory_mb: float | None = None
    bound_duplicates: bool = False  # at most one fetch batch plus the in-flight window per consumer kill

    def rules(self) -> Rules:
        bound = self.consumer_batch + 2 * self.concurrency if self.bound_duplicates else None
        return Rules(self.mode, duplicates_per_kill=bound, peak_memory_mb=self.peak_memory_mb)


SCENARIOS = {s.name: s for s in (
    Scenario("producer_kill", "an unknown publish retried with the same id is stored once; acked = durable",
             ("kill_producer",), producers=3, ack_delay=0.01, mean_interval=2.0),
    Scenario("consumer_kill", "at-least-once, key order, duplicates bounded by one batch per kill",
             ("kill_consumer",), consumers=3, handler_delay=0.005, bound_duplicates=True),
    Scenario("consumer_kill_exclusive", "exclusive: total order with failover after a SIGKILL",
             ("kill_consumer",), mode="exclusive", consumers=2, handler_delay=0.001, bound_duplicates=True),
    Scenario("writer_kill", "the embedded store survives SIGKILL of any writer mid-transaction",
             ("kill_producer", "kill_consumer"), backends=("sqlite",), producers=2, consumers=2, rate=2000.0,
             batch=100, consumer_batch=256, mean_interval=2.0),
    Scenario("broker_kill", "Pulsar: acked events survive a broker SIGKILL; clients carry on after its restart",
             ("kill_broker",), backends=("pulsar",), mean_interval=25.0, down=(0.0, 2.0), settle=15.0),
    # on the cluster of scripts/pulsar-cluster.sh (3 bookies, ensemble 3 / write 3 / ack 2; 2 brokers)
    Scenario("cluster_bookie_kill", "cluster: SIGKILL of one bookie: publishing goes on, nothing acked is lost",
             ("kill_bookie",), backends=("pulsar",), mean_interval=12.0, down=(0.0, 3.0), settle=3.0),
    Scenario("cluster_broker_kill", "cluster: SIGKILL of the topic's broker: the topic moves, clients reconnect",
             ("kill_owner_broker",), backends=("pulsar",), mean_interval=20.0, down=(0.0, 2.0), settle=5.0),
    Scenario("cluster_bookies_restart", "cluster: a rolling restart of every bookie (one at a time)",
             ("restart_bookies",), backends=("pulsar",), mean_interval=20.0, settle=3.0),
    Scenario("cluster_metadata_stop", "cluster: ZooKeeper stopped for up to 20 s, then started again",
             ("stop_metadata",), backends=("pulsar",), mean_interval=20.0, down=(2.0, 20.0), settle=5.0),
    Scenario("cluster_mixed", "cluster: every cluster fault and producer/consumer kills, drawn at random",
             (*CLUSTER_FAULTS, "kill_producer", "kill_consumer"), backends=("pulsar",), mean_interval=4.0,
             down=(0.0, 3.0), settle=3.0),
    Scenario("backlog", "a slow consumer with a 1,000,000-event backlog: bounded memory, catches up",
             (), producers=0, consumers=1, backlog=1_000_000, slow_for=10.0, slow_delay=0.002,
             consumer_batch=256, peak_memory_mb=300.0),
)}


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    backend: str
    scenario: Scenario
    seed: int
    duration: float
    figures: Figures
    problems: tuple[str, ...]  # the checker's violations plus the run's own (crashes, store damage)
    drain_seconds: float  # from the producers' stop until nothing is unacked
    caught_up_seconds: float  # from the consumers' start until nothing is unacked
    backlog_publish_rate: float | None

    @property
    def passed(self) -> bool:
        return not self.problems

    def markdown(self) -> str:
        row = markdown_row(self.backend, self.scenario.name, self.seed, self.duration, self.figures,
                           self.scenario.rules())
        if self.problems and row.endswith("| pass |"):
            row = row[: -len("pass |")] + "FAIL: " + "; ".join(self.problems) + " |"
        return row

    def details(self) -> str:
        lines = [f"{self.backend} {self.scenario.name}: drain {self.drain_seconds:.1f} s, caught up "
                 f"{self.caught_up_seconds:.1f} s after the consumers started"
                 + (f", backlog published at {self.backlog_publish_rate:,.0f} events/s"
                    if self.backlog_publish_rate else "")
                 + f", duplicates without a fault {self.figures.duplicates_without_fault}"
                 + f", dead-lettered {self.figures.dead_lettered}, unresolved {self.figures.unresolved}"]
        lines += [f"  t={f.at:7.2f}s {f.kind:<13} pid {f.victim:<8} recovered in {f.recovery:6.2f} s"
                  + (f", {f.duplicates} of its events delivered again" if f.kind == "kill_consumer" else "")
                  for f in self.figures.faults]
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


def shared_pulsar_url() -> str:
    service = os.environ.get("EDBUS_TEST_PULSAR", "pulsar://127.0.0.1:6650")
    admin = os.environ.get("EDBUS_TEST_PULSAR_ADMIN", "http://127.0.0.1:8080")
    return f"{service}?admin={admin}&prefix=f{uuid.uuid4().hex[:10]}-&publish_timeout=120"


def run(scenario: Scenario, backend: str, seed: int, duration: float, workdir: Path, *,
        backlog: int | None = None, pulsar_url: str | None = None, pin_schema: bool = True) -> RunResult:
    """One run. ``workdir`` holds the histories (``history/``) apart from the store (``store/``) and a
    broker of the run's own (``broker/``, for ``kill_broker``); ``backlog`` overrides the scenario's.
    ``pin_schema``: on Pulsar, work around the broker deleting the schema (see ``_pin_pulsar_schema``)."""
    if backend not in scenario.backends:
        raise ValueError(f"scenario {scenario.name} does not run on {backend}")
    history_dir = workdir / "history"
    history_dir.mkdir(parents=True, exist_ok=True)
    broker = PulsarBroker(workdir / "broker") if "kill_broker" in scenario.faults else None
    cluster = PulsarCluster.for_run(workdir / "cluster") if set(scenario.faults) & set(CLUSTER_FAULTS) else None
    if backend == "sqlite":
        (workdir / "store").mkdir(exist_ok=True)
        url = f"sqlite:///{workdir / 'store' / 'edbus.db'}"
    elif broker is not None:
        broker.start()
        url = broker.url(f"f{uuid.uuid4().hex[:10]}-")
    elif cluster is not None:
        cluster.start()
        prefix = f"f{uuid.uuid4().hex[:10]}-"
        url, cluster_topic = cluster.url(prefix), prefix + TOPIC
    else:
        url = pulsar_url or shared_pulsar_url()
    runner_log = HistoryWriter(history_dir / "runner.jsonl")
    bus = Bus.from_url(url)
    problems: list[str] = []
    try:
        bus.backend.subscribe(TOPIC, SUBSCRIPTION, Mode(scenario.mode), StartAt.parse("earliest"))
        if backend == "pulsar" and pin_schema:
            _pin_pulsar_schema(bus)
        backlog_rate = _publish_backlog(scenario, url, history_dir, backlog)
        fleet = _fleet(scenario, url, history_dir, broker, runner_log)
        if cluster is not None:
            fleet.cluster, fleet.topic = cluster, cluster_topic
        try:
            fleet.start()
            started = now()
            schedule = build_schedule(seed, duration, scenario.faults, mean_interval=scenario.mean_interval,
                                      producers=scenario.producers, consumers=scenario.consumers,
                                      down=scenario.down)
            # nothing to inject nor publish (backlog): straight to the drain, which times the catch-up
            phase = duration if scenario.faults or scenario.producers else 0.0
            _inject(fleet, schedule, phase, runner_log, problems, scenario.settle)
            for w in fleet.producers:
                if w.stop(timeout=360) != 0:
                    problems.append(f"producer {w.name} did not stop cleanly: {w.errors()[-500:]}")
            drained = _drain(bus, fleet, runner_log, timeout=max(180.0, (backlog or scenario.backlog) / 2000))
            if drained is None:
                problems.append("the subscription did not catch up before the drain deadline: "
                                + _subscription_state(bus))
            caught_up = now() - started
            for w in fleet.consumers:
                if w.stop(timeout=60) != 0:
                    problems.append(f"consumer {w.name} did not stop cleanly: {w.errors()[-500:]}")
        finally:
            fleet.finish_sampling()
            fleet.kill_all()
        stored, dead = _tally(url, workdir)
        if backend == "sqlite":
            problems += _integrity(workdir / "store" / "edbus.db")
    finally:
        bus.close()
        runner_log.close()
        if broker is not None:
            broker.stop()
        if cluster is not None:
            cluster.stop()
    figures = check(history_dir, stored=stored, dead_lettered=dead)
    violations = figures.violations(scenario.rules()) + problems
    if violations:  # what the workers logged (e.g. a consumer replaced) says where to look
        violations += [f"log: {w.name}: {line}" for w in [*fleet.producers, *fleet.consumers]
                       for line in w.errors().splitlines() if "edbus" in line][-10:]
    return RunResult(backend, scenario, seed, duration, figures, tuple(violations), drained or 0.0, caught_up,
                     backlog_rate)


def _fleet(s: Scenario, url: str, history: Path, broker: PulsarBroker | None, runner_log: HistoryWriter) -> Fleet:
    common = ["--url", url, "--topic", TOPIC]
    producers = [Worker("produce", f"p{i}", history / f"p{i}.jsonl",
                        [*common, "--keys", str(s.keys), "--batch", str(s.batch), "--rate", str(s.rate),
                         "--ack-delay", str(s.ack_delay)]) for i in range(s.producers)]
    consumers = [Worker("consume", f"c{i}", history / f"c{i}.jsonl",
                        [*common, "--subscription", SUBSCRIPTION, "--mode", s.mode, "--batch", str(s.consumer_batch),
                         "--concurrency", str(s.concurrency), "--lease", str(s.lease), "--delay", str(s.handler_delay),
                         "--slow-for", str(s.slow_for), "--slow-delay", str(s.slow_delay)]) for i in range(s.consumers)]
    return Fleet(producers, consumers, broker, runner_log)


def _publish_backlog(s: Scenario, url: str, history: Path, count: int | None) -> float | None:
    """The backlog, published before any consumer runs, by one producer process in batches of 1,000."""
    count = s.backlog if count is None else count
    if not count:
        return None
    w = Worker("produce", "backlog", history / "backlog.jsonl",
               ["--url", url, "--topic", TOPIC, "--count", str(count), "--batch", "1000", "--keys", "64"])
    started = now()
    w.start()
    if w.wait(timeout=max(600.0, count / 500)) != 0:
        raise RuntimeError(f"backlog producer failed: {w.errors()}")
    return count / (now() - started)


def _inject(fleet: Fleet, schedule: tuple[Fault, ...], duration: float, log: HistoryWriter,
            problems: list[str], settle: float) -> None:
    """Apply the schedule's faults at their times, but never sooner than ``settle`` seconds after the
    previous restart (late when an earlier one is still in progress); a worker that exits on its own
    is a problem of the run."""
    start = now()
    log.write("phase", name="faults", scheduled=len(schedule), duration=duration)
    pending = list(schedule)
    ready_at = start
    while now() - start < duration:
        for w in [*fleet.producers, *fleet.consumers]:
            if w.proc is not None and w.proc.poll() is not None:
                problems.append(f"{w.name} exited on its own ({w.proc.returncode}): {w.errors()[-800:]}")
                w.start()
        if pending and now() - start >= pending[0].at and now() >= ready_at:
            fleet.apply(pending.pop(0))
            ready_at = now() + settle
            continue
        time.sleep(0.05)  # the schedule's clock: next fault or end of the phase


def _drain(bus: Bus, fleet: Fleet, log: HistoryWriter, timeout: float) -> float | None:
    """Consumers run until the subscription has nothing unacked; seconds it took, None at the deadline."""
    start = now()
    log.write("phase", name="drain")
    while now() - start < timeout:
        try:
            [stats] = [s for s in bus.backend.subscriptions(TOPIC) if s.subscription == SUBSCRIPTION]
        except StoreError:
            stats = None  # the broker is still coming back: ask again
        if stats is not None and stats.backlog == 0 and stats.in_flight == 0:
            log.write("phase", name="drained")
            return now() - start
        for w in fleet.consumers:
            if not w.alive():
                w.start()
        time.sleep(0.5)  # polling the subscription's stats
    return None


def _subscription_state(bus: Bus) -> str:
    """What the store says of the subscription, for a run that did not drain: on Pulsar the broker's
    own stats of it (per consumer: connected since, unacked, blocked), to tell a stuck client from a
    stuck broker."""
    try:
        [stats] = [s for s in bus.backend.subscriptions(TOPIC) if s.subscription == SUBSCRIPTION]
        summary = f"backlog {stats.backlog}, in flight {stats.in_flight}, consumers {stats.consumers}"
        from edbus.backends.pulsar.backend import PulsarBackend

        backend = bus.backend
        if not isinstance(backend, PulsarBackend):
            return summary
        raw = backend.admin.stats(backend.config.prefix + TOPIC)["subscriptions"][SUBSCRIPTION]
        keep = ("msgBacklog", "unackedMessages", "msgRateRedeliver", "consumersAfterMarkDeletePosition",
                "lastMarkDeleteAdvancedTimestamp", "blockedSubscriptionOnUnackedMsgs")
        consumers = [{k: c.get(k) for k in ("consumerName", "unackedMessages", "availablePermits",
                                             "blockedConsumerOnUnackedMsgs", "connectedSince", "keyHashRanges")}
                     for c in raw.get("consumers", [])]
        return f"{summary}; broker: {json.dumps({k: raw.get(k) for k in keep})}; consumers: {json.dumps(consumers)}"
    except Exception as exc:  # a diagnostic only: the problem is reported either way
        return f"(no stats: {type(exc).__name__}: {exc})"


def _pin_pulsar_schema(bus: Bus) -> None:
    """Finding of this harness (docs/reliability.md): edbus keeps an event type's schema on a Pulsar
    topic that has no producer and no subscription, which the broker's inactive-topic clean-up
    (``brokerDeleteInactiveTopicsEnabled``, on by default, every 60 s) deletes with its schema; a consumer
    started afterwards dead-letters every event (``DecodeError``: no schema version 1). Until edbus
    protects those topics, the harness registers the schema and holds a subscription on its topic, so
    that the other figures are measured; ``--no-pin-schema`` shows the failure."""
    from edbus.backends.pulsar.backend import PulsarBackend
    from edbus.backends.pulsar.schemas import SUBJECT_PREFIX

    backend = bus.backend
    assert isinstance(backend, PulsarBackend)
    bus.codec.encode(TOPIC, SEQ, Seq("pin", 0, "runner"))  # registers the schema, stores nothing
    backend.admin.create_subscription(f"{backend.config.prefix}{SUBJECT_PREFIX}{SEQ.name}", "faults-pin", True, {})


def _tally(url: str, workdir: Path) -> tuple[dict[str, int], list[str]]:
    """What the topic holds (copies of each id) and the ids in its dead-letter topic, read by a process
    of its own, tried five times: ``create_reader`` of the Pulsar client (3.x) now and then crashes the
    reading process with a segmentation fault here (docs/reliability.md, findings)."""
    out = workdir / "tally.json"
    for _ in range(5):
        w = Worker("tally", "tally", out, ["--url", url, "--topic", TOPIC, "--subscription", SUBSCRIPTION])
        w.start()
        if w.wait(timeout=1800) == 0:
            found = json.loads(out.read_text())
            return found["stored"], found["dead"]
    raise RuntimeError(f"could not read the topic back: {w.errors()}")


def _integrity(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = db.execute("PRAGMA integrity_check").fetchall()
    finally:
        db.close()
    return [] if result == [("ok",)] else [f"integrity_check: {result[:5]}"]
