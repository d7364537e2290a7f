"""What every demo process shares: its configuration, stopping on SIGTERM/SIGINT or when the parent goes
away, a log file, and running a consumer until told to stop."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edbus import Backoff, Bus, Consumer

__all__ = ["AUDIT_SUBSCRIPTION", "REPLICA_SUBSCRIPTION", "DemoConfig", "ServiceProcess"]

REPLICA_SUBSCRIPTION = "replica"
AUDIT_SUBSCRIPTION = "audit"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo's size and where everything lives; passed to each process as JSON."""

    url: str
    workdir: str
    topic: str = "course-catalog"
    courses: int = 200
    changes: int = 3000
    poison: int = 5
    rate: float = 800.0  # events per second published by Studio; 0 = as fast as it can
    seed: int = 2024
    replicas: int = 2  # replica service processes sharing the key_ordered subscription
    max_attempts: int = 3
    backoff_base: float = 0.05
    lease: float = 30.0  # seconds a replica holds events: a killed process's events come back after it

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DemoConfig:
        return cls(**json.loads(text))

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
