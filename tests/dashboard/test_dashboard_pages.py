"""The dashboard in headless Chromium: pages show the figures of a store filled by the test, a redrive from
the page moves the dead letters back, replay moves the cursor, the read-only dashboard refuses changes, bad
input gives an error page and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page

from edbus import Bus
from tests.conftest import backend_url, eventually
from tests.dashboard.conftest import SUB, TOPIC, Filled, Server, fill, login, screenshot
from tests.events import CATALOG_CHANGED, course


def stats(url: str) -> tuple[int, int]:
    """(backlog, dead letters) of the test subscription, read through the Bus."""
    with Bus.from_url(url, create=False) as bus:
        s = next(s for s in bus.subscriptions(TOPIC) if s.subscription == SUB)
        return s.backlog, s.dead_lettered


def cell(page: Page, selector: str) -> str:
    return page.inner_text(selector).strip()


def test_overview_shows_topic_and_subscription_figures_of_the_store(
        page: Page, store: Filled, serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve(store.url, admin=False)
    page.goto(server.base + "/")
    row = f"tr[data-subscription='{TOPIC}/{SUB}']"
    assert cell(page, f"tr[data-topic='{TOPIC}'] .events") == "15"
    assert cell(page, f"tr[data-topic='{TOPIC}.{SUB}.dlq'] .events") == "2"
    assert cell(page, f"{row} .backlog") == "5"
    assert cell(page, f"{row} .dead") == "2"
    assert cell(page, f"{row} .in-flight") == "0"
    assert cell(page, f"{row} .consumers") == "1"
    assert cell(page, f"{row} .age").endswith("s")
    assert cell(page, "#readonly") == "read-only dashboard"
    screenshot(page, "overview", tmp_path)


def test_subscription_page_shows_its_stats_backlog_chart_and_dead_letters(
        page: Page, store: Filled, serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve(store.url)
    login(page, server.base)
    page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}")
    assert cell(page, "#stats .backlog") == "5"
    assert page.locator("svg.chart polyline").count() == 1
    assert sorted(page.locator("#dead-letters tr[data-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.id)")) == sorted(store.dead_ids)
    assert "RuntimeError: search service down" in page.inner_text("#dead-letters")
    screenshot(page, "subscription", tmp_path)


def test_dead_letter_page_shows_error_traceback_attempts_and_a_masked_payload(
        page: Page, store: Filled, serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve(store.url)
    dead_id = store.dead_ids[0]
    page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}/dead-letters/{dead_id}")
    assert "RuntimeError: search service down" in cell(page, "#dead-letter .error")
    assert cell(page, "#dead-letter .attempts") == "1"
    assert "Traceback (most recent call last)" in page.inner_text("#traceback")
    payload = page.inner_text("#payload")
    assert '"course_key": "•••"' in payload and "Course" not in payload  # keys shown, values masked
    screenshot(page, "dead-letter", tmp_path)
    # unmasking needs the admin session, and then shows the decoded data
    assert page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}/dead-letters/{dead_id}?reveal=1").status == 403
    login(page, server.base, "bob")
    page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}/dead-letters/{dead_id}")
    page.click("#reveal")
    assert '"name": "Course ' in page.inner_text("#payload")
    assert "bob (127.0.0.1) revealed the payload" in server.log.read_text()


def test_redrive_all_from_the_page_moves_the_dead_letters_back_to_the_subscription(
        page: Page, store: Filled, serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve(store.url)
    assert stats(store.url) == (5, 2)
    login(page, server.base, "alice")
    page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}")
    page.click("#redrive-all")
    assert "all 2 dead letter(s)" in page.inner_text("#question")
    screenshot(page, "confirm", tmp_path)
    assert stats(store.url) == (5, 2)  # the confirmation page changed nothing
    page.click("#confirm")
    assert cell(page, "#result") == "redrove 2 dead letter(s)"
    assert stats(store.url) == (7, 0)
    assert "alice (127.0.0.1) asked: redrive all dead letters of indexer on course-catalog: redrove 2" \
        in server.log.read_text()


def test_purge_and_republish_one_dead_letter_from_the_page(
        page: Page, store: Filled, serve: Callable[..., Server]) -> None:
    server = serve(store.url)
    login(page, server.base)
    first, second = store.dead_ids
    page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}/dead-letters/{first}")
    page.click("#republish")
    page.click("#confirm")
    assert f"republished dead letter {first} to {TOPIC} as event" in cell(page, "#result")
    assert stats(store.url) == (6, 2)  # a new event in the backlog; the dead letter stays
    page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}/dead-letters/{second}")
    page.click("#purge")
    page.click("#confirm")
    assert cell(page, "#result") == "purged 1 dead letter(s)"
    assert stats(store.url) == (6, 1)


def test_replay_from_the_page_moves_the_cursor_to_the_earliest_event(
        page: Page, store: Filled, serve: Callable[..., Server]) -> None:
    server = serve(store.url)
    login(page, server.base)
    page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}")
    page.fill("#replay input[name=to]", "earliest")
    page.click("#replay button")
    page.click("#confirm")
    assert cell(page, "#result") == "moved indexer to earliest: backlog 5 -> 15"
    assert stats(store.url)[0] == 15


def test_schema_page_lists_event_types_versions_and_the_rule_of_each_topic(
        page: Page, store: Filled, serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve(store.url, admin=False)
    page.goto(server.base + "/schemas")
    assert cell(page, f"tr[data-type='{CATALOG_CHANGED.name}'] .versions") == "1"
    with Bus.from_url(store.url, create=False) as bus:
        rule = str(bus.registry.rule(TOPIC))
    assert f"{TOPIC}\t{rule}" in page.inner_text("#rules")
    screenshot(page, "schemas", tmp_path)


def test_read_only_dashboard_offers_no_change_and_refuses_one_sent_anyway(
        page: Page, store: Filled, serve: Callable[..., Server]) -> None:
    server = serve(store.url, admin=False)
    page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}")
    assert page.locator("#redrive-all, #purge-all, #replay").count() == 0
    assert page.goto(f"{server.base}/confirm?action=redrive&topic={TOPIC}&subscription={SUB}").status == 403
    assert "read-only" in cell(page, "#error")
    answer = page.request.post(server.base + "/actions", form={
        "action": "purge", "topic": TOPIC, "subscription": SUB, "confirm": "yes", "csrf": "x"})
    assert answer.status == 403
    assert stats(store.url) == (5, 2)


def test_a_change_without_the_session_or_with_a_forged_csrf_token_is_refused(
        page: Page, store: Filled, serve: Callable[..., Server]) -> None:
    server = serve(store.url)
    form = {"action": "purge", "topic": TOPIC, "subscription": SUB, "confirm": "yes", "csrf": "forged"}
    assert page.request.post(server.base + "/actions", form=form).status == 403  # no session
    login(page, server.base)
    assert page.request.post(server.base + "/actions", form=form).status == 403  # session, forged token
    page.goto(server.base + "/login")
    assert page.request.post(server.base + "/login", form={"name": "eve", "token": "wrong"}).status == 403
    assert stats(store.url) == (5, 2)


def test_bad_input_in_forms_and_urls_gives_an_error_page_and_changes_nothing(
        page: Page, store: Filled, serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve(store.url)
    login(page, server.base)
    page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}")
    page.fill("#replay input[name=to]", "last tuesday")
    page.click("#replay button")
    assert "last tuesday" in cell(page, "#error")
    screenshot(page, "error", tmp_path)
    bad = {
        "/subscriptions/bad%20topic!/x": 400,
        f"/subscriptions/{TOPIC}/no-such-sub": 404,
        f"/subscriptions/{TOPIC}/{SUB}/dead-letters/no-such-id": 404,
        f"/confirm?action=explode&topic={TOPIC}&subscription={SUB}": 400,
        f"/confirm?action=republish&topic={TOPIC}&subscription={SUB}": 400,
        f"/confirm?action=purge&topic={TOPIC}&subscription={SUB}&id=nope": 404,
        "/no/such/page": 404,
    }
    for path, status in bad.items():
        answer = page.goto(server.base + path)
        assert answer is not None and answer.status == status, path
        assert page.locator("#error").count() == 1 and "Traceback" not in page.content(), path
    assert stats(store.url) == (5, 2)
    assert "Traceback" not in server.log.read_text()


def test_on_pulsar_the_overview_shows_the_figures_and_a_redrive_moves_the_dead_letters_back(
        page: Page, serve: Callable[..., Server], tmp_path: Path) -> None:
    url = backend_url("pulsar", tmp_path)
    store = fill(url)
    server = serve(url)
    row = f"tr[data-subscription='{TOPIC}/{SUB}']"

    def shown() -> bool:  # the broker's stats follow acks and dead-lettering shortly after
        page.goto(server.base + "/")
        return cell(page, f"{row} .backlog") == "5" and cell(page, f"{row} .dead") == "2"

    eventually(shown, timeout=30, interval=0.5)
    assert cell(page, f"tr[data-topic='{TOPIC}'] .events") == "15"
    login(page, server.base)
    page.goto(f"{server.base}/subscriptions/{TOPIC}/{SUB}")
    assert sorted(page.locator("#dead-letters tr[data-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.id)")) == sorted(store.dead_ids)
    page.click("#redrive-all")
    page.click("#confirm")
    assert cell(page, "#result") == "redrove 2 dead letter(s)"
    eventually(lambda: stats(url) == (7, 0), timeout=30, interval=0.5)


def test_the_overview_refreshes_its_figures_in_place_as_the_store_changes(
        page: Page, store: Filled, serve: Callable[..., Server]) -> None:
    server = serve(store.url, admin=False)
    page.goto(server.base + "/")
    assert cell(page, f"tr[data-topic='{TOPIC}'] .events") == "15"
    page.evaluate("window.notReloaded = true")
    with Bus.from_url(store.url, create=False) as bus:
        bus.publish_many(TOPIC, [(CATALOG_CHANGED, course(i)) for i in range(20, 23)])
    # htmx polls every 5 s and swaps the figures: the same page (no reload) shows the new counts
    page.wait_for_function(
        f"document.querySelector(\"tr[data-topic='{TOPIC}'] .events\").innerText.trim() === '18'", timeout=20_000)
    assert cell(page, f"tr[data-subscription='{TOPIC}/{SUB}'] .backlog") == "8"
    assert page.evaluate("window.notReloaded") is True
