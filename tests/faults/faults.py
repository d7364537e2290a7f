"""Fault injectors: worker processes that can be SIGKILLed and started again, a Pulsar broker of the
run's own that can be SIGKILLed and restarted on the same data, and the peak memory of processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.faults.history import HistoryWriter, now
from tests.faults.schedule import Fault

if TYPE_CHECKING:
    from tests.faults.cluster import PulsarCluster

__all__ = ["BROKER_PROBE", "ROOT", "PulsarBroker", "Worker", "Fleet", "peak_memory_kb"]

ROOT = Path(__file__).resolve().parents[2]
PULSAR_SH = ROOT / "scripts" / "pulsar.sh"


def peak_memory_kb(pid: int) -> int | None:
    """The process's peak resident set (VmHWM) in KiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class Worker:
    """One producer or consumer slot: a process of ``tests.faults.workers`` on one history log, started
    again on the same log after a kill (a producer then retries its unknown publishes)."""

    def __init__(self, role: str, name: str, log: Path, args: list[str]) -> None:
        self.role, self.name, self.log, self.args = role, name, log, args
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self.stderr = log.with_suffix(".stderr")

    def start(self) -> None:
        self._offset = self.log.stat().st_size if self.log.exists() else 0  # where this process's records begin
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.workers", self.role, "--name", self.name,
                 "--log", str(self.log), *self.args],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL; returns the pid killed."""
        assert self.proc is not None
        pid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        return pid

    def wait(self, timeout: float) -> int | None:
        """Wait for it to exit on its own; its exit code (None: SIGKILLed at the deadline)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            return None

    def started(self, timeout: float = 120.0) -> bool:
        """Wait for the process's ``start`` record (its first: it handles SIGTERM from then on)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            if self.log.exists():
                with open(self.log, "rb") as f:
                    f.seek(self._offset)
                    if f.readline().startswith(b'{"k":"start"'):
                        return True
            time.sleep(0.05)  # polling the log
        return False

    def stop(self, timeout: float) -> int | None:
        """SIGTERM once it handles it, then wait (a producer finishes its publish, a consumer its
        in-flight events); the exit code, or None if it had to be SIGKILLed."""
        if self.proc is None:
            return None
        self.started()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")[-3000:] if self.stderr.exists() else ""


class PulsarBroker:
    """A standalone broker of the run's own (own data folder, free ports) via ``scripts/pulsar.sh``."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port, self.admin_port = self._free_port(), self._free_port()
        self.env = {**os.environ, "EDBUS_PULSAR_DATA": str(data), "EDBUS_PULSAR_PORT": self.port,
                    "EDBUS_PULSAR_ADMIN_PORT": self.admin_port}

    @staticmethod
    def _free_port() -> str:
        return subprocess.run(["bash", str(PULSAR_SH), "free-port"], capture_output=True, text=True,
                              check=True).stdout.strip()

    def url(self, prefix: str, publish_timeout: float = 300) -> str:
        # publish_timeout: an append keeps retrying through a restart (start takes 10-60 s here)
        return (f"pulsar://127.0.0.1:{self.port}?admin=http://127.0.0.1:{self.admin_port}"
                f"&prefix={prefix}&publish_timeout={publish_timeout:g}")

    def _script(self, command: str) -> None:
        done = subprocess.run(["bash", str(PULSAR_SH), command], env=self.env, capture_output=True, text=True,
                              timeout=240)
        if done.returncode != 0:
            raise RuntimeError(f"pulsar.sh {command} failed: {done.stdout[-2000:]}{done.stderr[-3000:]}")

    def start(self) -> None:
        self._script("start")

    def healthy(self, timeout: float = 45.0) -> bool:
        """A publish on a new topic is acknowledged: "ready" (clusters, namespace) can hold while a broker
        restarted after a SIGKILL loads no topic (seen with 3.0.7 standalone: its topic-policies topic
        unreadable, or its bookie's registration lock flapping). In a process of its own: no hang here."""
        try:
            done = subprocess.run([sys.executable, "-c", BROKER_PROBE, f"pulsar://127.0.0.1:{self.port}"],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def restart_after_crash(self) -> bool:
        """Start on the crashed broker's data; if it does not serve within 45 s, stop it cleanly and start
        it again, as an operator would. Returns whether that clean restart was needed."""
        self.start()
        if self.healthy():
            return False
        self.stop()
        self.start()
        if not self.healthy(timeout=90.0):
            raise RuntimeError(f"the broker in {self.data} serves no topic even after a clean restart")
        return True

    def kill(self) -> int:
        """SIGKILL the broker's JVM (bookie and metadata store die with it, as in a machine crash of
        the broker process); returns its pid."""
        pid = int((self.data / "broker.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)  # waiting for the kernel to reap it
        return pid

    def stop(self) -> None:
        self._script("stop")


BROKER_PROBE = """
import sys, uuid, pulsar
client = pulsar.Client(sys.argv[1], operation_timeout_seconds=20, connection_timeout_ms=5000)
producer = client.create_producer(f"persistent://public/default/edbus-probe-{uuid.uuid4().hex[:8]}",
                                  send_timeout_millis=20000)
producer.send(b"probe")
client.close()
"""


class Fleet:
    """The run's producers, consumers and (on Pulsar, when it is a fault target) broker or cluster;
    applies faults and samples the consumers' peak memory."""

    def __init__(self, producers: list[Worker], consumers: list[Worker], broker: PulsarBroker | None,
                 runner_log: HistoryWriter, cluster: PulsarCluster | None = None, topic: str = "") -> None:
        self.producers, self.consumers, self.broker = producers, consumers, broker
        self.cluster, self.topic = cluster, topic  # topic: its full name on the cluster (owner lookups)
        self.log = runner_log
        self.peak_kb: dict[int, int] = {}
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self._stop_supervising: Callable[[], None] | None = None

    def start(self) -> None:
        for w in [*self.consumers, *self.producers]:
            w.start()
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True)
        self._sampler.start()
        if self.cluster is not None:
            self._stop_supervising = self.cluster.supervise(self.log)

    def sample(self) -> None:
        for w in self.consumers:
            if w.alive():
                kb = peak_memory_kb(w.pid)
                if kb is not None and kb > self.peak_kb.get(w.pid, 0):
                    self.peak_kb[w.pid] = kb

    def _sample_loop(self) -> None:
        while not self._sampling.wait(0.5):
            self.sample()

    def apply(self, fault: Fault) -> None:
        """Kill the target now, restart it ``down_for`` seconds later; both logged with their times."""
        if self.cluster is not None and fault.kind not in ("kill_producer", "kill_consumer"):
            self.cluster.apply(fault, self.log, self.topic)
            return
        if fault.kind == "kill_broker":
            assert self.broker is not None, "kill_broker needs a broker of the run's own"
            before = now()  # the fault's time: its effects may be logged before the kill returns
            pid = self.broker.kill()
            self.log.write("fault", kind=fault.kind, target=0, victim=pid, scheduled=fault.at, t=before)
            time.sleep(fault.down_for)  # the broker stays down this long
            clean = self.broker.restart_after_crash()
            self.log.write("restarted", kind=fault.kind, target=0, clean_restart_needed=clean)
            return
        worker = (self.producers if fault.kind == "kill_producer" else self.consumers)[fault.target]
        if not worker.alive():
            return  # exited on its own: nothing to kill (the checker sees it in the worker's log)
        self.sample()
        before = now()
        pid = worker.kill()
        self.log.write("fault", kind=fault.kind, target=fault.target, victim=pid, scheduled=fault.at, t=before)
        time.sleep(fault.down_for)  # the slot stays empty this long
        worker.start()
        self.log.write("restarted", kind=fault.kind, target=fault.target, pid=worker.pid)

    def finish_sampling(self) -> None:
        if self._stop_supervising is not None:
            self._stop_supervising()
        self.sample()
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join(5)
        for pid, kb in sorted(self.peak_kb.items()):
            self.log.write("memory", victim=pid, peak_kb=kb)

    def kill_all(self) -> None:
        """Clean-up after a failure: nothing of the run keeps running."""
        for w in [*self.producers, *self.consumers]:
            if w.alive():
                w.kill()
