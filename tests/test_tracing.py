"""OpenTelemetry: a request span, its enqueue and the job's tries in another process, one trace."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import queue_async as qa
from queue_async.contrib.opentelemetry import instrument
from tests.helpers import drain
from tests.test_processes import ROOT, app_env

pytestmark = pytest.mark.anyio
__all__ = ["app_env"]  # a fixture, used by name


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


async def test_request_enqueue_and_handler_in_another_process_are_one_trace(
    app_env: dict[str, str], exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    spans, provider = exporter
    async with qa.Queue(app_env["REDIS_URL"], name=app_env["QA_QUEUE"]) as queue:
        instrument(queue, tracer_provider=provider)
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("GET /signup", kind=SpanKind.SERVER) as request:
            handle = await queue.enqueue("apps.flaky")  # fails once, then succeeds
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-m", "tests.apps.traced_worker"], env=app_env, cwd=ROOT
            )
        assert await handle.result(timeout=5) == 2
    worker_spans = [json.loads(line) for line in done.stdout.decode().splitlines()]
    (send,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    request_context = request.get_span_context()
    assert send.parent is not None and send.parent.span_id == request_context.span_id
    assert send.name == "send apps.flaky"
    assert send.attributes is not None
    assert send.attributes["messaging.message.id"] == handle.id
    tries = [s for s in worker_spans if s["name"] == "process apps.flaky"]
    assert [t["attributes"]["queue_async.attempt"] for t in tries] == [1, 2]
    trace_id = f"{request_context.trace_id:032x}"
    send_id = f"{send.get_span_context().span_id:016x}"
    for span in tries:
        assert (span["trace_id"], span["parent_id"], span["kind"]) == (
            trace_id,
            send_id,
            "CONSUMER",
        )
        attributes: dict[str, Any] = span["attributes"]
        assert attributes["messaging.system"] == "queue_async"
        assert attributes["messaging.destination.name"] == app_env["QA_QUEUE"]
        assert attributes["messaging.message.id"] == handle.id
    first, second = tries
    assert (first["status"], "retry scheduled" in first["events"]) == ("ERROR", True)
    assert second["status"] == "UNSET" and "another try" in second["events"]


async def test_a_batch_is_one_span_with_the_count_and_dead_letters_are_events(
    queue: qa.Queue, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    spans, provider = exporter

    @queue.task(name="doomed")
    async def doomed(n: int) -> None:
        raise qa.Fatal("no")

    instrument(queue, tracer_provider=provider)
    handles = await queue.enqueue_many([doomed.call(n) for n in range(3)])
    await drain(queue)
    finished = spans.get_finished_spans()
    (send,) = [s for s in finished if s.kind is SpanKind.PRODUCER]
    assert send.attributes is not None
    assert send.attributes["messaging.batch.message_count"] == 3
    processed = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert len(processed) == 3
    assert all([e.name for e in s.events][-1] == "dead-lettered" for s in processed)
    assert {s.attributes["messaging.message.id"] for s in processed if s.attributes} == {
        h.id for h in handles
    }
    # The caller's own headers stay, next to the trace context.
    handle = await doomed.options(headers={"tenant": "acme"}).enqueue(9)
    headers = (await handle.info()).headers
    assert headers["tenant"] == "acme" and "traceparent" in headers
