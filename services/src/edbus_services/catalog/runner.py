"""Runs the demo: starts the processes, follows their progress through the bus, stops them, reports.

Order of events: the replica processes, the audit process and the consumers of the other services
(``config.services``) start and report ready; then Studio and the other services' producers start
publishing. Once every producer has exited, both catalog subscriptions have no backlog (every event acked
or dead-lettered) and every other service says it has caught up, the consumers get SIGTERM and finish what
they hold. Then (``config.rebuild``) the replica is rebuilt by replaying the topic into a new file. Any
process failing, or the deadline passing, stops the run: every child still alive is killed, and none is
left running in any case.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO

from edbus import Bus
from edbus.errors import ConfigError
from edbus_services.catalog.audit import AuditLog
from edbus_services.catalog.planner import plan_events
from edbus_services.catalog.replica import CatalogReplica
from edbus_services.catalog.report import DemoReport, build_report, check_rebuild
from edbus_services.catalog.service import (
    AUDIT_SUBSCRIPTION,
    REPLICA_SUBSCRIPTION,
    DemoConfig,
    DemoService,
    ServiceFigures,
    ServiceProgress,
    load_service,
)
from edbus_services.catalog.worker import SERVICE_ROLE

__all__ = ["Child", "DemoFailed", "Progress", "Supervisor", "run_demo"]


class DemoFailed(Exception):
    """The run could not finish: a process failed or the deadline passed (every child was killed)."""


@dataclasses.dataclass
class Child:
    name: str
    role: str
    process: subprocess.Popen[bytes]
    log_path: str
    log: IO[bytes]


class Supervisor:
    """The demo's child processes: each in its own session, its output in ``<workdir>/<name>.log``."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.children: dict[str, Child] = {}
        self.killed: list[str] = []  # killed on purpose (chaos): their exit status is expected

    def spawn(self, role: str, name: str) -> Child:
        log_path = str(self.config.path(f"{name}.log"))
        log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        process = subprocess.Popen(
            [sys.executable, "-m", "edbus_services.catalog.worker", role, name, self.config.to_json()],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        child = self.children[name] = Child(name, role, process, log_path, log)
        return child

    def ready(self, names: list[str]) -> bool:
        return all(self.config.path(f"{name}.ready").exists() for name in names)

    def failed(self, expected_done: set[str]) -> list[Child]:
        """Children that exited unasked: with an error, or (consumers) at all."""
        out = []
        for child in self.children.values():
            code = child.process.poll()
            if child.name in self.killed:
                continue
            if code is not None and (code != 0 or child.name not in expected_done):
                out.append(child)
        return out

    def stop(self, names: list[str], timeout: float) -> None:
        """SIGTERM, then wait up to ``timeout`` seconds for a graceful exit; kill whoever is left."""
        for name in names:
            if self.children[name].process.poll() is None:
                self.children[name].process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in names:
            try:
                self.children[name].process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.children[name].process.kill()
                self.children[name].process.wait()

    def kill(self, name: str) -> None:
        """SIGKILL one child on purpose: what it held is redelivered to the others after its lease."""
        self.killed.append(name)
        self.children[name].process.kill()
        self.children[name].process.wait()

    def kill_all(self) -> None:
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.kill()
            child.process.wait()
            child.log.close()

    def alive(self) -> int:
        return sum(child.process.poll() is None for child in self.children.values())

    def exit_codes(self) -> dict[str, int | None]:
        return {name: child.process.poll() for name, child in self.children.items()}

    def log_tail(self, child: Child, lines: int = 15) -> str:
        child.log.flush()
        with open(child.log_path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])


@dataclasses.dataclass(frozen=True)
class Progress:
    phase: str
    elapsed: float
    planned: int
    published: int
    replica_done: int  # acked or dead-lettered by the replica subscription
    replica_dead: int
    audit_done: int
    pids: dict[str, int]
    services: dict[str, ServiceProgress] = dataclasses.field(default_factory=dict)  # the other services


def _poll(bus: Bus, config: DemoConfig, phase: str, started: float, planned: int, supervisor: Supervisor,
          services: list[tuple[str, DemoService]]) -> tuple[Progress, bool]:
    """The progress, as the bus sees it, and whether every subscription is caught up."""
    topic = bus.topic(config.topic)
    published = sum(t.events for t in bus.topics() if t.topic == topic)
    subs = {s.subscription: s for s in bus.subscriptions(config.topic)}
    replica, audit = subs.get(REPLICA_SUBSCRIPTION), subs.get(AUDIT_SUBSCRIPTION)
    progress = Progress(
        phase, time.monotonic() - started, planned, published,
        published - replica.backlog if replica else 0, replica.dead_lettered if replica else 0,
        published - audit.backlog if audit else 0,
        {name: child.process.pid for name, child in supervisor.children.items()},
        {service.name: service.progress(config, bus) for _, service in services})
    caught_up = replica is not None and audit is not None and replica.backlog == 0 and audit.backlog == 0
    return progress, caught_up and all(p.caught_up for p in progress.services.values())


def _figures(service: DemoService, config: DemoConfig, bus: Bus) -> ServiceFigures:
    try:
        return service.report(config, bus)
    except Exception as exc:  # one service's broken report must not hide the others' figures
        return ServiceFigures((("report failed", f"{type(exc).__name__}: {exc}"),), ok=False)


def run_demo(config: DemoConfig, on_progress: Callable[[Progress], None] = lambda p: None,
             timeout: float = 55.0, interval: float = 0.1, chaos: bool = False) -> DemoReport:
    """Run the whole demo; returns the report, or raises ``DemoFailed`` (no child left running).

    ``chaos``: once the replica subscription has consumed 40% of the events, SIGKILL ``replica-1`` and
    start another replica process (use a short ``config.lease``: the killed one's events wait for it).
    """
    started = time.monotonic()
    deadline = started + timeout
    planned = len(plan_events(config.courses, config.changes, config.poison, config.seed))
    services = [(spec, load_service(spec)) for spec in config.services]
    os.makedirs(config.workdir, exist_ok=True)
    bus = config.open_bus("openedx/demo/supervisor")
    supervisor = Supervisor(config)
    try:
        existing = [t for t in bus.topics() if t.topic == bus.topic(config.topic) and t.events]
        if existing:
            raise ConfigError(f"topic {config.topic!r} in {config.url} already has {existing[0].events} events: "
                              "use a fresh store or another --topic")
        CatalogReplica(config.replica_db).close()  # create the schemas before the processes share them
        AuditLog(config.audit_db).close()
        consumers = [f"replica-{i}" for i in range(1, config.replicas + 1)] + ["audit"]
        for name in consumers:
            supervisor.spawn(name.split("-")[0], name)
        producers: list[tuple[str, str]] = []  # (role, name) of the other services' producers
        for spec, service in services:
            for name, producer in service.processes(config):
                if producer:
                    producers.append((SERVICE_ROLE + spec, name))
                else:
                    supervisor.spawn(SERVICE_ROLE + spec, name)
                    consumers.append(name)
        finishing = {"studio", *(name for _, name in producers)}

        def step(phase: str, done: set[str]) -> bool:
            progress, caught_up = _step(phase, done)
            if chaos and not supervisor.killed and progress.replica_done >= 0.4 * planned:
                supervisor.kill("replica-1")
                replacement = f"replica-{config.replicas + 1}"
                supervisor.spawn("replica", replacement)
                consumers.append(replacement)
            return caught_up and supervisor.ready(consumers)  # never SIGTERM a process still starting

        def _step(phase: str, done: set[str]) -> tuple[Progress, bool]:
            if time.monotonic() > deadline:
                raise DemoFailed(f"not finished after {timeout:.0f}s (phase: {phase})")
            for child in supervisor.failed(done):
                raise DemoFailed(f"{child.name} (pid {child.process.pid}) exited with status "
                                 f"{child.process.returncode}; its log ends with:\n{supervisor.log_tail(child)}")
            progress, caught_up = _poll(bus, config, phase, started, planned, supervisor, services)
            on_progress(progress)
            time.sleep(interval)
            return progress, caught_up

        while not supervisor.ready(consumers):
            _step("starting consumers", set())
        started_producers = [supervisor.spawn("studio", "studio")]
        started_producers += [supervisor.spawn(role, name) for role, name in producers]
        while True:
            # before the poll: then every event is counted
            published = all(child.process.poll() is not None for child in started_producers)
            if step("catching up" if published else "publishing", finishing) and published:
                break
        supervisor.stop([c for c in consumers if c not in supervisor.killed],
                        timeout=max(1.0, min(15.0, deadline - time.monotonic())))
        progress, _ = _poll(bus, config, "done", started, planned, supervisor, services)
        on_progress(progress)
        codes = supervisor.exit_codes()
        report = build_report(config, bus, planned)
        if config.rebuild:
            on_progress(dataclasses.replace(progress, phase="rebuilding the replica by replay"))
            report.rebuild = check_rebuild(config, bus)
        report.services = [(service.name, _figures(service, config, bus)) for _, service in services]
        report.exit_codes = codes
        report.left_running = supervisor.alive()
        report.killed = list(supervisor.killed)
        report.duration = time.monotonic() - started
        return report
    except KeyboardInterrupt:
        supervisor.stop(list(supervisor.children), timeout=5.0)
        raise
    finally:
        supervisor.kill_all()
        bus.close()
