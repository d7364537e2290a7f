"""Faults on a multi-node Pulsar cluster (``scripts/pulsar-cluster.sh``): SIGKILL of one bookie, SIGKILL
of the broker that owns the run's topic, a rolling restart of every bookie, and a stop of the metadata
store (ZooKeeper) for a while. The cluster is the one ``$EDBUS_CLUSTER_DATA`` names when it serves (the
CI target starts one for the whole run), else one of the run's own, stopped and deleted at its end."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.faults.faults import ROOT
from tests.faults.history import HistoryWriter, now
from tests.faults.schedule import Fault

__all__ = ["CLUSTER_FAULTS", "PulsarCluster"]

CLUSTER_SH = ROOT / "scripts" / "pulsar-cluster.sh"
CLUSTER_FAULTS = ("kill_bookie", "kill_owner_broker", "restart_bookies", "stop_metadata")
BOOKIES = ("bookie1", "bookie2", "bookie3")
BROKERS = ("broker1", "broker2")


class PulsarCluster:
    """One cluster's data folder: its nodes' pids and ports, and the script that starts and stops them."""

    def __init__(self, data: Path, *, own: bool) -> None:
        self.data, self.own = data, own
        self.env = {**os.environ, "EDBUS_CLUSTER_DATA": str(data)}
        self._changing = threading.RLock()  # held by a fault for its whole course: no revive meanwhile

    @classmethod
    def for_run(cls, workdir: Path) -> PulsarCluster:
        """The shared cluster of ``$EDBUS_CLUSTER_DATA`` if it serves, else a new one in ``workdir``."""
        shared = os.environ.get("EDBUS_CLUSTER_DATA")
        if shared:
            cluster = cls(Path(shared), own=False)
            if cluster.script("status", check=False).returncode == 0:
                return cluster
        return cls(workdir, own=True)

    def script(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["bash", str(CLUSTER_SH), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"pulsar-cluster.sh {' '.join(args)} failed: {done.stdout[-2000:]}{done.stderr[-3000:]}")
        return done

    def start(self) -> None:
        if self.own:
            self.script("start")

    def stop(self) -> None:
        """Stop a cluster of the run's own (its folder, with every node's log, goes with the run's workdir:
        kept when the run fails); a shared one is left serving, every node up."""
        if self.own:
            self.script("stop")
        else:
            self.script("start")

    def ports(self) -> dict[str, int]:
        text = (self.data / "ports.env").read_text()
        return {m[1].lower(): int(m[2]) for m in re.finditer(r"EDBUS_CLUSTER_(\w+)_PORT=(\d+)", text)}

    def version(self) -> str:
        """The brokers' Pulsar release (its admin API's answer), e.g. ``4.2.4``."""
        r = httpx.get(f"http://127.0.0.1:{self.ports()['broker1_admin']}/admin/v2/brokers/version", timeout=30)
        r.raise_for_status()
        return r.text.strip().strip('"')

    def url(self, prefix: str, publish_timeout: float = 300) -> str:
        """Both brokers as service and admin hosts: a client finds a topic through whichever answers."""
        p = self.ports()
        service = ",".join(f"127.0.0.1:{p[b]}" for b in BROKERS)
        admin = ",".join(f"http://127.0.0.1:{p[b + '_admin']}" for b in BROKERS)
        return f"pulsar://{service}?admin={admin}&prefix={prefix}&publish_timeout={publish_timeout:g}"

    def pid(self, node: str) -> int | None:
        try:
            pid = int((self.data / node / "pid").read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None

    def owner(self, topic: str, timeout: float = 60.0, *, not_on: str = "") -> str | None:
        """The broker (broker1/broker2) that owns ``persistent://public/default/<topic>``, asked of each
        live broker's lookup API until one answers with a broker other than ``not_on`` (None at the
        deadline). A lookup of a topic whose broker is gone assigns it to a live one, as a client's does."""
        p = self.ports()
        by_port = {p[b]: b for b in BROKERS}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for b in BROKERS:
                if self.pid(b) is None:
                    continue
                try:
                    r = httpx.get(f"http://127.0.0.1:{p[b + '_admin']}/lookup/v2/topic/persistent/public/default/"
                                  f"{topic}", timeout=10)
                    if r.status_code == 200:
                        port = int(json.loads(r.text)["brokerUrl"].rsplit(":", 1)[1])
                        if by_port.get(port) != not_on:
                            return by_port.get(port)
                except (httpx.HTTPError, ValueError, KeyError):
                    pass  # this broker cannot answer now: ask the other, then again
            time.sleep(0.5)  # polling the brokers' lookup until one answers
        return None

    def kill(self, node: str) -> int:
        pid = self.pid(node)
        if pid is None:
            raise RuntimeError(f"{node} is not running in {self.data}")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)  # waiting for the kernel to reap it
        return pid

    def revive(self, log: HistoryWriter, *, but: str = "") -> None:
        """Start every node (but ``but``) that died on its own, as its supervisor would, logged: a bookie
        restarted just before the metadata store stops can fail its registration and exit (seen on Pulsar
        4.2.4), and with one of the 3 bookies gone no topic can open a ledger (ensemble 3)."""
        for node in ("zk", *BOOKIES, *BROKERS):
            if node == but:
                continue
            pid = self.pid(node)
            if pid is not None and node in BOOKIES and self._shut_itself_down(node):
                log.write("revived", node=node, why="shut itself down but did not exit")
                self.kill(node)
                self.script("start", node)
            elif pid is None:
                log.write("revived", node=node)
                self.script("start", node)

    def _shut_itself_down(self, node: str) -> bool:
        """The bookie triggered its own shutdown since it last started: the liveness probe a supervisor
        would have. BookKeeper 4.17.3 (Pulsar 4.2.4's) can trigger it while still starting (its
        registration failed: ZooKeeper was stopped), then finish starting, and the process lives on,
        unregistered, serving nothing (seen 2026-12-06)."""
        try:
            with open(self.data / node / "node.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - (1 << 20)))
                tail = f.read()
        except FileNotFoundError:
            return False
        return tail.rfind(b"Triggering shutdown of Bookie") > tail.rfind(b"Hello, I'm your bookie")

    def supervise(self, log: HistoryWriter) -> Callable[[], None]:
        """Check every second, as a supervisor (systemd, Kubernetes) would, for nodes that died on their
        own, and start them (``revive``), but never in the middle of a fault; returns the stop function.
        A bookie whose ZooKeeper session expired during a metadata-store stop exits, and with one of the 3
        gone after the last fault the run would wait on ``Not enough bookies`` until its deadline."""
        done = threading.Event()

        def loop() -> None:
            while not done.wait(1.0):
                with self._changing:
                    try:
                        self.revive(log)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # tried again in a second
                        log.write("revive_failed", error=str(exc)[-500:])

        thread = threading.Thread(target=loop, name="cluster-supervisor", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            thread.join(660)

        return stop

    def apply(self, fault: Fault, log: HistoryWriter, topic: str) -> None:
        """Apply one cluster fault and bring the cluster back, both logged with their times (a node that
        died on its own since the last fault is started first: ``revive``)."""
        with self._changing:
            self._apply(fault, log, topic)

    def _apply(self, fault: Fault, log: HistoryWriter, topic: str) -> None:
        self.revive(log)
        before = now()
        if fault.kind == "kill_bookie":
            node = BOOKIES[fault.target]
            pid = self.kill(node)
            log.write("fault", kind=fault.kind, target=fault.target, victim=pid, node=node, scheduled=fault.at,
                      t=before)
            time.sleep(fault.down_for)  # the bookie stays down this long
            self.script("start", node)
            log.write("restarted", kind=fault.kind, target=fault.target, node=node)
        elif fault.kind == "kill_owner_broker":
            owner = self.owner(topic)
            if owner is None:
                raise RuntimeError(f"no broker answers the lookup of {topic}")
            node = owner
            before = now()  # the fault's time: just before the kill, after the lookup
            pid = self.kill(node)
            log.write("fault", kind=fault.kind, target=BROKERS.index(node), victim=pid, node=node,
                      scheduled=fault.at, t=before)
            time.sleep(fault.down_for)  # the broker stays down this long; its topics move meanwhile
            moved_to = self.owner(topic, timeout=90.0, not_on=node)  # once the dead broker's session expires
            log.write("moved", kind=fault.kind, node=node, owner=moved_to, after=now() - before)
            if moved_to is None:
                raise RuntimeError(f"{topic} did not move off the killed {node} (owner now {moved_to})")
            self.revive(log, but=node)
            self.script("start", node)
            log.write("restarted", kind=fault.kind, target=BROKERS.index(node), node=node)
        elif fault.kind == "restart_bookies":
            log.write("fault", kind=fault.kind, target=0, victim=0, scheduled=fault.at, t=before)
            for node in BOOKIES:  # rolling: the next one only once this one serves again
                self.script("restart", node)
            log.write("restarted", kind=fault.kind, target=0)
        elif fault.kind == "stop_metadata":
            pid = self.pid("zk") or 0
            self.script("stop", "zk")
            log.write("fault", kind=fault.kind, target=0, victim=pid, scheduled=fault.at, t=before)
            time.sleep(fault.down_for)  # the metadata store stays down this long
            self.script("start", "zk")
            log.write("restarted", kind=fault.kind, target=0)
        else:
            raise ValueError(f"not a cluster fault: {fault.kind}")
