"""The dashboard served by ``edbus dashboard`` in its own process, a store filled by the test, and headless
Chromium from Debian's package driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from edbus import Bus, Event, StartAt
from tests.conftest import eventually
from tests.events import CATALOG_CHANGED, CourseInfo, course

CHROMIUM = os.environ.get("EDBUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "test-admin-token-0123456789"
TOPIC, SUB = "course-catalog", "indexer"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"


@dataclasses.dataclass
class Filled:
    url: str
    dead_ids: list[str]


def fill(url: str) -> Filled:
    """10 events handled (2 fail into the dead-letter topic), then 5 more waiting: backlog 5, dead letters 2."""
    with Bus.from_url(url) as bus:
        bus.publish_many(TOPIC, [(CATALOG_CHANGED, course(i)) for i in range(10)])
        consumer = bus.consumer(TOPIC, SUB, max_attempts=1)

        def handle(event: Event[CourseInfo]) -> None:
            if event.data.name in ("Course 3", "Course 4"):
                raise RuntimeError("search service down")

        consumer.add(CATALOG_CHANGED, handle)
        consumer.run(max_events=10, install_signals=False)
        bus.publish_many(TOPIC, [(CATALOG_CHANGED, course(i)) for i in range(10, 15)])
        dead = [m.record.id for m in bus.backend.read(f"{TOPIC}.{SUB}.dlq", StartAt(), 10)]
    return Filled(url, dead)


@pytest.fixture
def store(tmp_path: Path) -> Filled:
    return fill(f"sqlite:///{tmp_path}/edbus.db")


@dataclasses.dataclass
class Server:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(url: str, *, admin: bool = True) -> Server:
        port = _free_port()
        args = [sys.executable, "-m", "edbus.cli.main", "--url", url, "dashboard", "--port", str(port),
                "--sample-every", "0.5"]
        if admin:
            token_file = tmp_path / "token"
            token_file.write_text(TOKEN + "\n")
            args += ["--admin-token-file", str(token_file)]
        log = tmp_path / f"dashboard-{port}.log"
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        server = Server(f"http://127.0.0.1:{port}", proc, log)
        started.append(server)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the dashboard exited: {log.read_text()}")
            try:
                return httpx.get(server.base + "/", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        eventually(up, timeout=30, interval=0.1)
        return server

    yield start
    for server in started:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not (Path(CHROMIUM).exists() and shutil.which(CHROMIUM)):
        problem = f"no Chromium at {CHROMIUM}: run scripts/browser.sh (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    p = context.new_page()
    yield p
    context.close()


def screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    """Into docs/dashboard/ when EDBUS_SCREENSHOTS=1 (make dashboard-screenshots), else the test's folder."""
    folder = DOCS if os.environ.get("EDBUS_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page: Page, base: str, name: str = "alice") -> None:
    page.goto(base + "/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#operator")
