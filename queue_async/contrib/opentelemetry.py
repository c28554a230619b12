"""OpenTelemetry traces from enqueue through the handler: ``pip install 'queue-async[tracing]'``.

::

    from queue_async.contrib.opentelemetry import instrument

    instrument(queue)   # in the producers and in the workers (the same app module)

An enqueue runs in a PRODUCER span (``send <task>``, or ``send`` with the count for a batch)
and carries its W3C trace context in the job's headers (``traceparent``, ``tracestate``);
the worker runs the handler in a CONSUMER span (``process <task>``) whose parent is that
context, so a request, its enqueue and the job's tries are one trace. The spans carry the
messaging semantic conventions (``messaging.system``, ``messaging.destination.name`` = the
queue, ``messaging.message.id`` = the job id, ``messaging.operation.type``) and
``queue_async.task`` and ``queue_async.attempt``. A failed try records the exception and an
event: ``retry scheduled`` (with the delay) or ``dead-lettered``; a try that comes after
another (a retry, or a recovery after a lost lease) says so with its attempt number.

Only the API is needed here; configure the SDK (a TracerProvider and exporter) as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "queue_async.contrib.opentelemetry needs opentelemetry-api: "
        "pip install 'queue-async[tracing]'"
    ) from exc

import queue_async as qa

__all__ = ["SYSTEM", "instrument"]

SYSTEM = "queue_async"
"""The ``messaging.system`` attribute of every span."""
_SCOPE = "queue_async"


def instrument(queue: qa.Queue, tracer_provider: TracerProvider | None = None) -> None:
    """Trace every enqueue of ``queue`` in this process, and every job its workers run."""
    tracer = trace.get_tracer(_SCOPE, qa.__version__, tracer_provider=tracer_provider)

    async def traced_enqueue(
        specs: list[qa.JobSpec[Any]],
        call_next: Callable[[list[qa.JobSpec[Any]]], Awaitable[list[qa.JobHandle[Any]]]],
    ) -> list[qa.JobHandle[Any]]:
        tasks = {spec.task for spec in specs}
        name = f"send {next(iter(tasks))}" if len(tasks) == 1 else "send"
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": queue.name,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        if len(specs) == 1:
            attributes["queue_async.task"] = specs[0].task
        else:
            attributes["messaging.batch.message_count"] = len(specs)
        with tracer.start_as_current_span(
            name, kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            handles = await call_next([_with_headers(spec, carrier) for spec in specs])
            if len(handles) == 1:
                span.set_attribute("messaging.message.id", handles[0].id)
            return handles

    async def traced_job(ctx: qa.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        parent = propagate.extract(ctx.headers)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": ctx.queue.name,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": ctx.job_id,
            "queue_async.task": ctx.task,
            "queue_async.attempt": ctx.attempt,
        }
        with tracer.start_as_current_span(
            f"process {ctx.task}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if ctx.attempt > 1:
                span.add_event("another try", {"queue_async.attempt": ctx.attempt})
            try:
                return await call_next()
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                if ctx.will_retry:
                    span.add_event("retry scheduled", {"queue_async.retry_in": ctx.retry_in or 0.0})
                elif ctx.will_retry is False:
                    aborted = isinstance(exc, asyncio.CancelledError)
                    span.add_event("aborted" if aborted else "dead-lettered")
                raise

    queue.enqueue_middleware(traced_enqueue)
    queue.middleware(traced_job)


def _with_headers(spec: qa.JobSpec[Any], carrier: dict[str, str]) -> qa.JobSpec[Any]:
    if not carrier:
        return spec
    options = spec.options or qa.EnqueueOptions.model_validate({})
    headers = {**carrier, **(options.headers or {})}  # the caller's own headers win
    return replace(spec, options=options.model_copy(update={"headers": headers}))
