"""The openedx producer's failure log and monitoring attributes, in this process with Django settings.

A failed ``send`` is logged with the event's id, type, topic and metadata but never its data (a learner's
email, username, name) unless the service sets ``EDBUS_LOG_FAILED_PAYLOADS = True``. Every send sets the
edx-django-utils custom attributes ``edbus_topic``, ``edbus_event_id`` and ``edbus_event_type``; they are
read back from a real monitoring backend: edx-django-utils' ``OpenTelemetryBackend`` (chosen by the
documented ``OPENEDX_TELEMETRY`` setting) writing onto a span of the OpenTelemetry SDK, made current here
(the global tracer provider is left alone: tests/test_tracing.py checks it).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import attrs
import django
import pytest
from django.conf import settings
from django.test import override_settings
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from edbus import Bus
from edbus.errors import StoreUnavailableError, ValidationError

if not settings.configured:  # no other test configures Django in the pytest process
    settings.configure(USE_TZ=True)
    django.setup()

from edx_django_utils.monitoring import TelemetryBackend
from openedx_events.data import EventsMetadata
from openedx_events.learning.signals import COURSE_ENROLLMENT_CREATED

from edbus.openedx.config import close_bus
from edbus.openedx.producer import EdbusProducer
from tests.openedx.signal_data import key_field, signal_data

SIGNAL = COURSE_ENROLLMENT_CREATED
TOPIC = "learning-enrollment"
OTEL = ["edx_django_utils.monitoring.OpenTelemetryBackend"]


def _enrollment(name: Any = "Alice Secretname") -> dict[str, Any]:
    """The signal's data with personal values a log must not show (``name`` of another type: does not
    serialize)."""
    data = signal_data(SIGNAL)
    e = data["enrollment"]
    pii = attrs.evolve(e.user.pii, username="alice_secret_login", email="alice.secret@example.com", name=name)
    data["enrollment"] = attrs.evolve(e, user=attrs.evolve(e.user, pii=pii))
    return data


PERSONAL = ("alice_secret_login", "alice.secret@example.com", "Alice Secretname", "DemoX2")


def _metadata() -> EventsMetadata:
    return EventsMetadata(event_type=SIGNAL.event_type, id=uuid.uuid1(), minorversion=0)


@pytest.fixture
def service(url: str) -> Iterator[str]:
    """The producer's settings on the test store (``url``: each backend); the process's Bus is closed
    after each test so the next one opens its own."""
    close_bus()
    with override_settings(EDBUS_URL=url, EVENT_BUS_TOPIC_PREFIX="safety", OPENEDX_TELEMETRY=OTEL):
        yield url
        close_bus()


def _send(data: dict[str, Any], metadata: EventsMetadata | None = None) -> EventsMetadata:
    metadata = metadata or _metadata()
    EdbusProducer().send(signal=SIGNAL, topic=TOPIC, event_key_field=key_field(SIGNAL), event_data=data,
                         event_metadata=metadata)
    return metadata


def _failed_send_log(caplog: pytest.LogCaptureFixture, data: dict[str, Any], error: type[Exception]) -> tuple[
        EventsMetadata, str]:
    metadata = _metadata()
    with caplog.at_level(logging.ERROR, "edbus.openedx.producer"), pytest.raises(error):
        _send(data, metadata)
    (record,) = [r for r in caplog.records if r.name == "edbus.openedx.producer"]
    text = caplog.text  # the formatted lines, tracebacks included
    assert record.getMessage() in text
    return metadata, text


def test_a_send_whose_data_does_not_serialize_logs_its_id_and_type_and_no_data_value(
        service: str, caplog: pytest.LogCaptureFixture) -> None:
    metadata, text = _failed_send_log(caplog, _enrollment(name=12345678), ValidationError)
    assert str(metadata.id) in text and SIGNAL.event_type in text and "safety-" + TOPIC in text
    assert "EDBUS_LOG_FAILED_PAYLOADS" in text
    for value in PERSONAL:
        assert value not in text, value
    with Bus.from_url(service) as bus:
        assert not any(t.topic == "safety-" + TOPIC for t in bus.topics())


def test_payloads_are_logged_only_when_the_service_opts_in(service: str, caplog: pytest.LogCaptureFixture) -> None:
    with override_settings(EDBUS_LOG_FAILED_PAYLOADS=True):
        _, text = _failed_send_log(caplog, _enrollment(name=12345678), ValidationError)
    assert "alice.secret@example.com" in text and "alice_secret_login" in text


def test_a_send_to_a_store_that_cannot_open_logs_the_store_error_and_no_data(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "not-a-folder").write_text("")
    close_bus()
    with override_settings(EDBUS_URL=f"sqlite:///{tmp_path}/not-a-folder/bus.db", OPENEDX_TELEMETRY=OTEL):
        try:
            metadata, text = _failed_send_log(caplog, _enrollment(), StoreUnavailableError)
        finally:
            close_bus()
    assert "StoreUnavailableError: " in text and str(metadata.id) in text  # the store's message is kept
    for value in PERSONAL:
        assert value not in text, value


def _sent_in_span(data: dict[str, Any]) -> tuple[Any, ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with trace.use_span(provider.get_tracer("web").start_span("POST /enroll"), end_on_exit=True):
        try:
            metadata = _send(data)
        except ValidationError:
            metadata = None
    (span,) = exporter.get_finished_spans()
    return metadata, span


def test_a_send_sets_topic_event_id_and_type_as_edx_django_utils_custom_attributes(service: str) -> None:
    metadata, span = _sent_in_span(_enrollment())
    attributes = dict(span.attributes or {})
    assert attributes == {"edbus_topic": "safety-" + TOPIC, "edbus_event_id": str(metadata.id),
                          "edbus_event_type": SIGNAL.event_type}
    with Bus.from_url(service) as bus:
        assert [m.record.id for m, _, _ in bus.read("safety-" + TOPIC)] == [str(metadata.id)]


def test_a_failed_send_carries_the_same_attributes(service: str) -> None:
    _, span = _sent_in_span(_enrollment(name=12345678))
    assert dict(span.attributes or {})["edbus_event_type"] == SIGNAL.event_type
    assert "edbus_event_id" in dict(span.attributes or {})


class Recording(TelemetryBackend):  # type: ignore[misc]
    """A telemetry backend (the documented ``OPENEDX_TELEMETRY`` extension point) that keeps what it is
    given: the consumer's worker threads have no current span to read attributes back from."""

    attributes: ClassVar[list[tuple[str, Any]]] = []

    def set_attribute(self, key: str, value: Any) -> None:
        Recording.attributes.append((key, value))

    def record_exception(self) -> None:
        pass

    def create_span(self, name: str, operation_name: str | None = None) -> Any:
        return contextlib.nullcontext()

    def tag_root_span_with_error(self, exception: BaseException) -> None:
        pass

    def set_local_root_span_name(self, name: str, group: str | None = None, priority: int | None = None) -> None:
        pass


def test_consuming_sets_topic_subscription_event_id_type_and_attempt(service: str) -> None:
    from edbus.openedx.consumer import EdbusConsumer

    metadata = _send(_enrollment())
    Recording.attributes.clear()
    with override_settings(OPENEDX_TELEMETRY=[f"{__name__}.Recording"]):
        EdbusConsumer(TOPIC, "safety-group", max_events=1, idle_timeout=30).consume_indefinitely()
    got = dict(Recording.attributes)
    assert got["edbus_topic"] == "safety-" + TOPIC and got["edbus_subscription"] == "safety-group"
    assert got["edbus_event_id"] == got["id"] == str(metadata.id)
    assert got["edbus_event_type"] == got["event_type"] == SIGNAL.event_type and got["edbus_attempt"] == 1


def test_without_edx_django_utils_monitoring_no_attributes_are_set_and_nothing_fails() -> None:
    # openedx-events itself imports edx_django_utils.cache: only its monitoring can be missing here
    code = ("import sys; sys.modules['edx_django_utils.monitoring'] = None  # an import of it fails\n"
            "from edbus.openedx.config import _attribute_setter, set_custom_attributes\n"
            "set_custom_attributes({'edbus_topic': 't'})\n"
            "print(_attribute_setter())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and done.stdout.strip() == "None", done.stderr
