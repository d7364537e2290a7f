"""Wake-ups of the embedded store between processes that share its folder: across network namespaces
(containers on one host sharing a volume), with dead listeners' leftovers, many busy listeners, long
paths. A listener in these tests waits for an hour unless woken, so only a wake-up can answer in time."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edbus.backends.base import Record, StartAt
from edbus.backends.sqlite import SqliteBackend
from edbus.backends.sqlite.wakeup import PREFIX, WakeListener, WakeSender
from tests.conftest import eventually

HOUR = 3600.0  # a listener's timeout: far beyond any test's deadline
DEADLINE = 30.0  # how long a test waits for a wake-up (a missed one would take HOUR)

# a listener process: opens the store, binds its wake-up socket, says so, then waits (an hour unless
# woken) and says how many events it can read when the wait returns
LISTENER = textwrap.dedent("""
    import os, sys
    from edbus.backends.base import StartAt
    from edbus.backends.sqlite import SqliteBackend
    store = SqliteBackend.from_url(sys.argv[1])
    store.wait(0)
    print("ready", os.readlink("/proc/self/ns/net"), store._listener.name, flush=True)
    for _ in range(int(sys.argv[2])):
        store.wait(float(sys.argv[3]))
        print("woken", len(store.read("t", StartAt("earliest"), 1000)), flush=True)
""")


def record() -> Record:
    return Record(uuid.uuid4().hex, "test.event.v1", "k", {}, b"x")


class Lines:
    """A child process's stdout, line by line, with a deadline on each line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())

    def next(self, timeout: float = DEADLINE) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from the child within {timeout}s") from None


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def spawn(children: list[subprocess.Popen[str]], url: str, rounds: int, *, netns: bool) -> Lines:
    prefix = ["unshare", "--net"] if netns else []
    proc = subprocess.Popen([*prefix, sys.executable, "-c", LISTENER, url, str(rounds), str(HOUR)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    children.append(proc)
    return Lines(proc)


def require_unshare() -> None:
    """Network namespaces need `unshare` and root; under CI their absence fails the test."""
    problem = None
    if shutil.which("unshare") is None:
        problem = "unshare (util-linux) is not installed"
    elif os.geteuid() != 0:
        problem = "unshare --net needs root"
    elif subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        problem = "unshare --net is not permitted here"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs network namespaces: {problem}")
        pytest.skip(problem)


def test_a_listener_in_another_network_namespace_is_woken_by_each_publish(
        tmp_path: Path, children: list[subprocess.Popen[str]]) -> None:
    require_unshare()
    url = f"sqlite:///{tmp_path}/edbus.db"
    with SqliteBackend.from_url(url) as store:
        child = spawn(children, url, 2, netns=True)
        ready, netns, name = child.next().split()
        assert ready == "ready"
        assert netns != os.readlink("/proc/self/ns/net"), "the listener must run in its own network namespace"
        store.append("t", [record()])
        assert child.next() == "woken 1"
        # the sender kept the live listener's socket (another namespace is no sign of death): woken again
        assert (tmp_path / "edbus.db-wake" / name).exists()
        store.append("t", [record()])
        assert child.next() == "woken 2"


def test_a_dead_listeners_socket_is_deleted_by_the_next_publish_and_live_ones_kept(
        tmp_path: Path, children: list[subprocess.Popen[str]]) -> None:
    url = f"sqlite:///{tmp_path}/edbus.db"
    folder = tmp_path / "edbus.db-wake"
    with SqliteBackend.from_url(url) as store:
        dead, live = spawn(children, url, 1, netns=False), spawn(children, url, 1, netns=False)
        dead_name, live_name = dead.next().split()[2], live.next().split()[2]
        children[0].send_signal(signal.SIGKILL)  # no chance to remove its socket
        children[0].wait(10)
        assert stat.S_ISSOCK((folder / dead_name).lstat().st_mode)
        store.append("t", [record()])
        assert not (folder / dead_name).exists()
        assert live.next() == "woken 1"
        assert (folder / live_name).exists()


def test_listeners_with_full_queues_do_not_stop_an_idle_one_being_woken(tmp_path: Path) -> None:
    """Unread wake-ups count against the sending socket's buffer: with one socket for every listener,
    ~25 busy listeners would use it all up and an idle listener would wait for its poll."""
    folder = tmp_path / "wake"
    busy = [WakeListener(folder) for _ in range(60)]
    sender = WakeSender(folder)
    try:
        for _ in range(20):  # more than a queue holds (net.unix.max_dgram_qlen, 10 by default)
            sender.notify()
        idle = WakeListener(folder)
        busy.append(idle)
        # the sender sees a new listener at its next listing (at once, or within a second)
        eventually(lambda: sender.notify() or idle.wait(0), timeout=DEADLINE)
        assert all(b.wait(0) for b in busy[:-1]), "every busy listener still has its wake-ups"
    finally:
        sender.close()
        for listener in busy:
            listener.close()


def test_a_store_path_longer_than_a_socket_address_still_wakes(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / "edbus.db-wake" / (PREFIX + "0" * 12))) > 108
    with SqliteBackend(deep / "edbus.db") as consumer, SqliteBackend(deep / "edbus.db") as producer:
        consumer.wait(0)
        woken = threading.Event()
        threading.Thread(target=lambda: (consumer.wait(HOUR), woken.set()), daemon=True).start()
        producer.append("t", [record()])
        assert woken.wait(DEADLINE)
        assert len(consumer.read("t", StartAt("earliest"), 10)) == 1


def test_the_wake_folder_is_private_to_its_owner_and_so_are_sockets(tmp_path: Path) -> None:
    with SqliteBackend(tmp_path / "edbus.db") as store:
        store.wait(0)
        folder = tmp_path / "edbus.db-wake"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        (sock,) = folder.iterdir()
        assert stat.S_ISSOCK(sock.lstat().st_mode)
        assert stat.S_IMODE(sock.lstat().st_mode) == 0o600


def test_a_listener_whose_socket_file_was_removed_binds_a_new_one(tmp_path: Path) -> None:
    folder = tmp_path / "wake"
    listener, sender = WakeListener(folder), WakeSender(folder)
    try:
        (folder / listener.name).unlink()
        assert not listener.wait(0)  # a timed-out wait notices, and binds again
        assert (folder / listener.name).exists()
        eventually(lambda: sender.notify() or listener.wait(0), timeout=DEADLINE)
    finally:
        sender.close()
        listener.close()


def test_files_of_older_edbus_versions_are_left_alone(tmp_path: Path) -> None:
    """Their markers (edbus-<pid>-<hex>) belong to listeners of an older edbus, perhaps still alive."""
    folder = tmp_path / "wake"
    folder.mkdir()
    (folder / "edbus-12-0123456789ab").touch()
    sender = WakeSender(folder)
    try:
        sender.notify()
        assert (folder / "edbus-12-0123456789ab").exists()
    finally:
        sender.close()


def test_publishes_wake_every_thread_waiting_on_the_processs_listener(tmp_path: Path) -> None:
    """The consumers of one process share its listener (xapi-feed runs several): each is woken."""
    folder = tmp_path / "wake"
    listener, sender = WakeListener(folder), WakeSender(folder)
    woken: queue.Queue[bool] = queue.Queue()
    threads = [threading.Thread(target=lambda: woken.put(listener.wait(HOUR)), daemon=True) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        eventually(lambda: sender.notify() or woken.qsize() == len(threads), timeout=DEADLINE)
        assert [woken.get_nowait() for _ in threads] == [True] * len(threads)
    finally:
        sender.close()
        listener.close()


def test_threads_waiting_with_different_timeouts_on_one_listener_never_raise(tmp_path: Path) -> None:
    """A wait used to set the shared socket's timeout under another thread's recv: TimeoutError ended a
    consumer of the demo's xapi-feed."""
    folder = tmp_path / "wake"
    listener, sender = WakeListener(folder), WakeSender(folder)
    errors: list[BaseException] = []
    stop = threading.Event()

    def waiter(timeout: float) -> None:
        try:
            for _ in range(300):
                listener.wait(timeout)
        except BaseException as exc:  # the failure this test is about
            errors.append(exc)

    threads = [threading.Thread(target=waiter, args=(t,)) for t in (0.0, 0.001, 0.003, 0.0)]
    notifier = threading.Thread(target=lambda: [sender.notify() for _ in iter(lambda: stop.wait(0.0005), True)])
    try:
        notifier.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=DEADLINE)
        assert errors == []
    finally:
        stop.set()
        notifier.join(timeout=DEADLINE)
        sender.close()
        listener.close()
