"""What every demo process shares: its configuration, stopping on SIGTERM/SIGINT or when the parent goes
away, a log file, and running a consumer until told to stop; and the interface of the other services the
demo can run beside the catalog (``DemoService``)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from edbus import Backoff, Bus, Consumer
from edbus.errors import ConfigError

__all__ = ["AUDIT_SUBSCRIPTION", "REPLICA_SUBSCRIPTION", "DemoConfig", "DemoService", "ServiceFigures",
           "ServiceProcess", "ServiceProgress", "load_service"]

REPLICA_SUBSCRIPTION = "replica"
AUDIT_SUBSCRIPTION = "audit"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo's size and where everything lives; passed to each process as JSON."""

    url: str
    workdir: str
    topic: str = "course-catalog"  # the topic Studio's EVENT_BUS_PRODUCER_CONFIG sends the catalog signals to
    courses: int = 200
    changes: int = 3000
    poison: int = 5
    rate: float = 800.0  # events per second published by Studio; 0 = as fast as it can
    seed: int = 2024
    replicas: int = 2  # replica service processes sharing the key_ordered subscription
    max_attempts: int = 3
    backoff_base: float = 0.05
    lease: float = 30.0  # seconds a replica holds events: a killed process's events come back after it
    rebuild: bool = True  # at the end, rebuild the replica by replay and compare it with the live one
    services: tuple[str, ...] = ()  # other services run beside the catalog: "module:attribute" of a DemoService

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DemoConfig:
        fields = json.loads(text)
        return cls(**{**fields, "services": tuple(fields.get("services", ()))})

    def path(self, name: str) -> Path:
        return Path(self.workdir) / name

    @property
    def studio_db(self) -> Path:
        return self.path("studio.db")

    @property
    def replica_db(self) -> Path:
        return self.path("replica.db")

    @property
    def audit_db(self) -> Path:
        return self.path("audit.db")

    def open_bus(self, source: str) -> Bus:
        return Bus.from_url(self.url, source=source)

    @property
    def backoff(self) -> Backoff:
        return Backoff(base=self.backoff_base)


class ServiceProcess:
    """The running process: ``stopping`` is set by SIGTERM, SIGINT, or the parent process going away."""

    def __init__(self, name: str, config: DemoConfig) -> None:
        self.name = name
        self.config = config
        self.started = time.time()
        self.stopping = threading.Event()
        self._callbacks: list[Callable[[], Any]] = []
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name}[%(process)d] %(levelname)s "
                                                       "%(name)s: %(message)s")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        parent = os.getppid()
        threading.Thread(target=self._watch_parent, args=(parent,), daemon=True, name="parent-watch").start()

    def _watch_parent(self, parent: int) -> None:
        while not self.stopping.wait(0.5):
            if os.getppid() != parent:
                logging.getLogger("edbus.demo").warning("parent %d went away: stopping", parent)
                self.stop()

    def on_stop(self, callback: Callable[[], Any]) -> None:
        self._callbacks.append(callback)
        if self.stopping.is_set():
            callback()

    def stop(self) -> None:
        self.stopping.set()
        for callback in list(self._callbacks):
            callback()

    def ready(self) -> None:
        """Tell the parent this process is up (it waits for consumers before starting Studio)."""
        self.config.path(f"{self.name}.ready").touch()

    def consume(self, consumer: Consumer) -> int:
        """Run ``consumer`` until stopped; it finishes and acks what it holds before returning."""
        self.on_stop(consumer.stop)
        self.ready()
        return consumer.run(install_signals=False)


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceProgress:
    """How far a service is, as its own bookkeeping or the bus sees it."""

    done: int
    total: int  # 0 when not known yet
    caught_up: bool  # nothing left to do once its producers have finished
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceFigures:
    """What a service reports at the end: summary rows (label, text) and whether its checks passed."""

    rows: tuple[tuple[str, str], ...]
    ok: bool


class DemoService(Protocol):
    """A service the demo runs beside the catalog (``edbus demo --service module:attribute``).

    Its processes are started like the catalog's (``python -m edbus_services.catalog.worker``, each with its
    own Bus): consumers first — each calls ``process.consume(consumer)`` (or ``process.ready()``) and runs
    until ``process.stopping`` — then, once every consumer is ready, its producers, which exit when done.
    The demo ends when every producer has exited and ``progress`` says caught up; consumers get SIGTERM.
    Its files go in ``config.workdir``, named after the service.
    """

    name: str

    def processes(self, config: DemoConfig) -> Sequence[tuple[str, bool]]:
        """(process name, is a producer) of each of its processes; names unique in the demo."""
        ...

    def run(self, process: ServiceProcess) -> int:
        """The body of the process called ``process.name`` (in the child process)."""
        ...

    def progress(self, config: DemoConfig, bus: Bus) -> ServiceProgress: ...

    def report(self, config: DemoConfig, bus: Bus) -> ServiceFigures: ...


def load_service(spec: str) -> DemoService:
    """The ``DemoService`` named ``module:attribute``; ``ConfigError`` if there is none."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"service {spec!r}: expected module:attribute")
    try:
        service = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"service {spec!r} does not load: {type(exc).__name__}: {exc}") from None
    missing = [m for m in ("name", "processes", "run", "progress", "report") if not hasattr(service, m)]
    if missing:
        raise ConfigError(f"service {spec!r} is not a DemoService: it has no {', '.join(missing)}")
    return service  # type: ignore[no-any-return]
