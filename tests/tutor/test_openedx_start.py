"""The settings and the init task the plugin renders, run for real by Django and edbus.

edx-platform cannot be installed here: tests/tutor/openedx_stand_in.py says what stands in for it and
what that cannot show. The Pulsar test uses the test run's broker (``make unit`` starts one).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edbus.backends import open_backend
from tests.conftest import PULSAR_ADMIN, PULSAR_SERVICE, pulsar_ready
from tests.tutor import openedx_stand_in
from tests.tutor.conftest import CONSUMERS
from tests.tutor.tutor_venv import TutorRoot


def start_django(folder: Path, service: str) -> tuple[int, str, str]:
    """django.setup() on ``<service>_tutor_settings`` (the edbus app's ready() runs the start-up check)."""
    done = openedx_stand_in.run(folder, [
        "python", "-c", f"import os; os.environ['DJANGO_SETTINGS_MODULE'] = '{service}_tutor_settings'; "
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.EVENT_BUS_PRODUCER, settings.EVENT_BUS_CONSUMER, settings.EDBUS_URL)"])
    return done.returncode, done.stdout, done.stderr


def stand_in(root: TutorRoot, folder: Path) -> Path:
    blocks = {service: openedx_stand_in.event_bus_block(root.text("apps", "openedx", "settings", service,
                                                                  "production.py"))
              for service in ("lms", "cms")}
    return openedx_stand_in.write(folder, blocks)


@pytest.fixture
def store_root(new_root: Callable[..., TutorRoot], tmp_path: Path) -> TutorRoot:
    """Embedded backend with the store in this test's folder (EDBUS_CUSTOM_STORE_VOLUME: it is not under
    /openedx/media-private here)."""
    return new_root(EDBUS_URL=f"sqlite:///{tmp_path}/store/edbus.db", EDBUS_CUSTOM_STORE_VOLUME=True,
                    EDBUS_CONSUMERS=CONSUMERS)


@pytest.mark.parametrize("service", ["lms", "cms"])
def test_django_starts_on_the_rendered_settings_with_edbus_start_up_check_passing(
        store_root: TutorRoot, tmp_path: Path, service: str) -> None:
    folder = stand_in(store_root, tmp_path / "openedx")
    code, out, err = start_django(folder, service)
    assert code == 0, err
    assert out.split() == ["edbus.openedx.create_producer", "edbus.openedx.EdbusConsumer",
                           f"sqlite:///{tmp_path}/store/edbus.db"]
    # the check opened the store (and closed it again)
    assert (tmp_path / "store" / "edbus.db").exists()


def test_without_the_plugin_block_the_start_up_check_refuses_tutors_redis_producer(
        store_root: TutorRoot, tmp_path: Path) -> None:
    """The counterpart: Tutor's own lines alone (edx-event-bus-redis, not installed) stop Django, so the
    test above passes only because the plugin's lines come after them and win."""
    production = store_root.text("apps", "openedx", "settings", "lms", "production.py")
    tutor_only = openedx_stand_in.event_bus_block(production).split("# BEGIN edbus")[0]
    folder = openedx_stand_in.write(tmp_path / "openedx", {"lms": tutor_only})
    code, _, err = start_django(folder, "lms")
    assert code != 0
    assert "ImproperlyConfigured: EVENT_BUS_PRODUCER 'edx_event_bus_redis.create_producer' does not load" in err


def run_init_task(root: TutorRoot, folder: Path) -> tuple[int, str, str]:
    done = openedx_stand_in.run(folder, ["sh", "-e", "-c", root.init_task()], timeout=240)
    return done.returncode, done.stdout, done.stderr


def test_the_init_task_creates_the_embedded_store_and_every_configured_subscription(
        store_root: TutorRoot, tmp_path: Path) -> None:
    folder = stand_in(store_root, tmp_path / "openedx")
    code, out, err = run_init_task(store_root, folder)
    assert code == 0, err
    with open_backend(f"sqlite:///{tmp_path}/store/edbus.db") as backend:
        subscriptions = {(s.topic, s.subscription) for s in backend.subscriptions()}
    assert subscriptions == {("dev-course-catalog-info-changed", "discovery_catalog"),
                             ("dev-course-authoring-xblock-lifecycle", "search-index")}
    assert "edbus: subscription search-index of dev-course-authoring-xblock-lifecycle (shared) is ready" in out
    # run again (every `tutor local launch` does): nothing changes, no error
    code, _, err = run_init_task(store_root, folder)
    assert code == 0, err


def test_the_init_task_fails_with_one_line_when_the_store_cannot_be_made(
        new_root: Callable[..., TutorRoot], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    root = new_root(EDBUS_URL=f"sqlite:///{blocker}/edbus.db", EDBUS_CUSTOM_STORE_VOLUME=True)
    folder = openedx_stand_in.write(tmp_path / "openedx", {
        "lms": openedx_stand_in.event_bus_block(root.text("apps", "openedx", "settings", "lms", "production.py"))
        + "EDBUS_CHECK_PRODUCER_AT_STARTUP = False\n"})  # else Django itself would not start
    code, _, err = run_init_task(root, folder)
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("edbus init: ")], err
    assert "Traceback" not in err


def test_the_init_task_creates_the_pulsar_namespace_with_its_policies_and_the_subscriptions(
        new_root: Callable[..., TutorRoot], tmp_path: Path) -> None:
    problem = pulsar_ready()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the Pulsar broker: {problem}")
        pytest.skip(problem)
    namespace = f"tutor{uuid.uuid4().hex[:10]}"
    url = f"{PULSAR_SERVICE}?admin={PULSAR_ADMIN}&tenant=public&namespace={namespace}"
    root = new_root(EDBUS_BACKEND="pulsar", EDBUS_URL=url, EDBUS_RETENTION_SECONDS=3 * 24 * 3600,
                    EDBUS_CONSUMERS=CONSUMERS)
    folder = stand_in(root, tmp_path / "openedx")
    # the check at Django start-up opens the store: the namespace must exist first, as the init task
    # makes it; the LMS's own start-up check is the previous tests' subject
    (folder / "lms_tutor_settings.py").write_text((folder / "lms_tutor_settings.py").read_text()
                                                  + "EDBUS_CHECK_PRODUCER_AT_STARTUP = False\n")
    try:
        code, out, err = run_init_task(root, folder)
        assert code == 0, err
        base = f"{PULSAR_ADMIN}/admin/v2/namespaces/public/{namespace}"
        with httpx.Client(timeout=30) as admin:
            assert admin.get(f"{base}/deduplication").json() is True
            assert admin.get(f"{base}/retention").json() == {"retentionTimeInMinutes": 3 * 24 * 60,
                                                              "retentionSizeInMB": -1}
            assert admin.get(f"{base}/autoSubscriptionCreation").json()["allowAutoSubscriptionCreation"] is False
        with open_backend(url) as backend:
            subscriptions = {(s.topic, s.subscription) for s in backend.subscriptions()}
        assert {("dev-course-catalog-info-changed", "discovery_catalog"),
                ("dev-course-authoring-xblock-lifecycle", "search-index")} <= subscriptions
        assert f"Pulsar namespace public/{namespace}: deduplication on" in out
        code, _, err = run_init_task(root, folder)  # again: the namespace exists, policies set again
        assert code == 0, err
    finally:
        httpx.delete(f"{PULSAR_ADMIN}/admin/v2/namespaces/public/{namespace}", params={"force": "true"},
                     timeout=60)
