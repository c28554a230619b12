"""A traced worker process for tests: runs tests.apps.tasks's queue in burst mode under
OpenTelemetry's SDK, then prints every span it ended as one JSON line each."""

from __future__ import annotations

import json

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import queue_async as qa
from queue_async.contrib.opentelemetry import instrument
from tests.apps.tasks import queue


async def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(queue, tracer_provider=provider)
    await qa.Worker(queue, heartbeat=0.5, lease=2).run(burst=True, handle_signals=False)
    await queue.close()
    for span in exporter.get_finished_spans():
        context, parent = span.get_span_context(), span.parent
        print(
            json.dumps(
                {
                    "name": span.name,
                    "kind": span.kind.name,
                    "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
                    "parent_id": f"{parent.span_id:016x}" if parent else None,
                    "attributes": dict(span.attributes or {}),
                    "events": [event.name for event in span.events],
                    "status": span.status.status_code.name,
                }
            )
        )


if __name__ == "__main__":
    anyio.run(main)
