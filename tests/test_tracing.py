"""Tracing with OpenTelemetry (the SDK's in-memory exporter): a publish inside a request span and the
handling of its events form one trace, spans carry the messaging conventions' attributes; without a
provider the own traceparent is written as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from edbus import Backoff, Bus, Event, StartAt
from edbus.bus.metrics import Metrics
from edbus.bus.retries import Retries
from edbus.bus.tracing import Tracing, current_traceparent
from tests.events import CATALOG_CHANGED, CourseInfo, course


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def traced_bus(url: str, provider: TracerProvider) -> Bus:
    return Bus.from_url(url, middleware=[Tracing(tracer_provider=provider), Metrics(),
                                         Retries(2, Backoff(0.01, jitter=0))])


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def test_publish_in_a_request_span_and_its_handling_form_one_trace(
        url: str, spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test-web")
    with traced_bus(url, provider) as bus:
        with tracer.start_as_current_span("GET /courses", kind=trace.SpanKind.SERVER) as request:
            event_id = bus.publish("t", CATALOG_CHANGED, course(1))
        seen: list[str | None] = []

        def handle(event: Event[CourseInfo]) -> None:
            seen.append(current_traceparent())
            bus.publish("downstream", CATALOG_CHANGED, event.data)  # inside the handler: same trace

        consumer = bus.consumer("t", "indexer")
        consumer.add(CATALOG_CHANGED, handle)
        assert consumer.run(max_events=1, install_signals=False) == 1
        topic = bus.topic("t")
    finished = exporter.get_finished_spans()
    trace_id = request.get_span_context().trace_id
    (send,) = by_name(finished, f"send {topic}")
    (process,) = by_name(finished, f"process {topic}")
    (downstream,) = [s for s in finished if s.name.startswith("send ") and s is not send]
    assert {s.context.trace_id for s in (send, process, downstream)} == {trace_id}
    assert send.parent is not None and send.parent.span_id == request.get_span_context().span_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert downstream.parent is not None and downstream.parent.span_id == process.context.span_id
    assert send.kind == trace.SpanKind.PRODUCER and process.kind == trace.SpanKind.CONSUMER
    assert dict(send.attributes or {}).items() >= {
        "messaging.system": "edbus", "messaging.destination.name": topic, "messaging.operation.type": "send",
        "messaging.message.id": event_id}.items()
    assert dict(process.attributes or {}).items() >= {
        "messaging.system": "edbus", "messaging.destination.name": topic,
        "messaging.consumer.group.name": "indexer", "messaging.message.id": event_id,
        "messaging.operation.type": "process"}.items()
    # the envelope's own traceparent is the send span's context: old consumers keep seeing one trace
    assert seen[0] is not None and seen[0].split("-")[1] == f"{trace_id:032x}"


def test_a_failing_handler_marks_its_process_span_as_an_error(
        tmp_path: Path, spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    with traced_bus(f"sqlite:///{tmp_path}/edbus.db", provider) as bus:
        bus.publish("t", CATALOG_CHANGED, course(1))
        consumer = bus.consumer("t", "s", max_attempts=1)

        def fail(event: Event[CourseInfo]) -> None:
            raise RuntimeError("boom")

        consumer.add(CATALOG_CHANGED, fail)
        consumer.run(max_events=1, install_signals=False)
    (process,) = by_name(exporter.get_finished_spans(), "process t")
    assert process.status.status_code == trace.StatusCode.ERROR
    assert any(e.name == "exception" for e in process.events)
    assert (process.attributes or {})["edbus.outcome"] == "deadletter"


def test_without_a_tracer_provider_events_get_the_own_traceparent_and_handlers_join_its_trace(
        tmp_path: Path) -> None:
    with Bus.from_url(f"sqlite:///{tmp_path}/edbus.db") as bus:  # OTel installed, no provider configured
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        bus.publish("t", CATALOG_CHANGED, course(1))
        seen: list[str | None] = []
        consumer = bus.consumer("t", "s")
        consumer.add(CATALOG_CHANGED, lambda e: seen.append(current_traceparent()))
        consumer.run(max_events=1, install_signals=False)
        (message,) = bus.backend.read("t", StartAt(), 10)
    assert seen == [message.record.headers["traceparent"]]


def test_a_global_provider_set_after_the_bus_started_is_used_within_a_second(
        monkeypatch: pytest.MonkeyPatch, spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """"No provider" is asked again once a second (asking reads the environment), not on every event."""
    provider, _ = spans
    asked: list[int] = []
    configured: list[TracerProvider] = []

    def global_provider() -> object:
        asked.append(1)
        return configured[0] if configured else trace.ProxyTracerProvider()

    clock = [100.0]
    monkeypatch.setattr(trace, "get_tracer_provider", global_provider)
    monkeypatch.setattr("edbus.bus.tracing.time.monotonic", lambda: clock[0])
    tracing = Tracing()
    own = {"traceparent"}  # without a provider: edbus's own traceparent; with one, the send span writes it
    assert all(set(tracing.publish_headers("t", 1)) == own for _ in range(50))
    assert len(asked) == 1
    configured.append(provider)  # the service configures OTel later
    clock[0] += 0.5
    assert set(tracing.publish_headers("t", 1)) == own and len(asked) == 1
    clock[0] += 0.6
    assert tracing.publish_headers("t", 1) == {} and len(asked) == 2
