"""Logs, metrics and the observer hooks: what an operator sees of the jobs."""

from __future__ import annotations

import contextvars
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import queue_async as qa
from queue_async.contrib.logs import JsonFormatter
from queue_async.contrib.prometheus import Metrics
from tests.helpers import FAST, drain
from tests.test_processes import ROOT, app_env, app_queue

pytestmark = pytest.mark.anyio
__all__ = ["app_env", "app_queue"]  # fixtures, used by name

JOB_FIELDS = ("job_id", "task", "queue", "attempt", "worker_id")


def _records(caplog: pytest.LogCaptureFixture, job_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "job_id", None) == job_id]


async def test_a_retry_logs_one_warning_line_and_a_final_failure_an_error_with_traceback(
    queue: qa.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    @queue.task(name="twice", retries=1, backoff_base=0.01)
    async def twice() -> None:
        raise ValueError("bad input")

    handle = await twice.enqueue()
    with caplog.at_level(logging.INFO, logger="queue_async"):
        await drain(queue)
    records = _records(caplog, handle.id)
    retry, final = records[0], records[-1]
    assert retry.levelno == logging.WARNING and retry.exc_info is None
    assert "try 1 failed: ValueError: bad input; retry in" in retry.getMessage()
    assert "\n" not in retry.getMessage()
    assert final.levelno == logging.ERROR
    assert final.exc_info is not None and final.exc_info[0] is ValueError
    assert "try 2 failed: ValueError: bad input; no tries left, it goes to dead" in (
        final.getMessage()
    )
    for record in (retry, final):
        assert {name: getattr(record, name) for name in JOB_FIELDS} == {
            "job_id": handle.id,
            "task": "twice",
            "queue": queue.name,
            "attempt": record.attempt,
            "worker_id": record.worker_id,
        }
        assert record.worker_id
    assert (retry.attempt, final.attempt) == (1, 2)
    assert (retry.outcome, final.outcome) == ("retry", "dead")  # type: ignore[attr-defined]


async def test_start_and_end_of_every_job_at_debug_with_its_duration(
    queue: qa.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    @queue.task(name="quick")
    async def quick() -> int:
        return 1

    handle = await quick.enqueue()
    with caplog.at_level(logging.INFO, logger="queue_async"):
        await drain(queue)
    assert _records(caplog, handle.id) == []  # nothing per job at INFO
    handle = await quick.enqueue()
    with caplog.at_level(logging.DEBUG, logger="queue_async.jobs"):
        await drain(queue)
    start, end = (r for r in _records(caplog, handle.id) if r.name == "queue_async.jobs")
    assert start.getMessage().endswith("try 1 started")
    assert end.outcome == "succeeded" and end.duration >= 0  # type: ignore[attr-defined]
    assert "succeeded in" in end.getMessage()


async def test_failure_records_carry_the_middlewares_context_and_it_sees_what_follows(
    queue: qa.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="-")
    seen: list[tuple[bool | None, float | None]] = []

    @queue.middleware
    async def with_tenant(ctx: qa.JobContext, call: Callable[[], Awaitable[Any]]) -> Any:
        token = tenant.set(ctx.headers.get("tenant", "?"))
        try:
            return await call()
        except Exception:
            seen.append((ctx.will_retry, ctx.retry_in))
            raise
        finally:
            tenant.reset(token)

    class TenantFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.tenant = tenant.get()
            return True

    @queue.task(name="flaky", retries=1, backoff_base=0.01)
    async def flaky() -> None:
        raise RuntimeError("down")

    handle = await flaky.options(headers={"tenant": "acme"}).enqueue()
    logger = logging.getLogger("queue_async.worker")
    tenant_filter = TenantFilter()
    logger.addFilter(tenant_filter)
    try:
        with caplog.at_level(logging.INFO, logger="queue_async"):
            await drain(queue)
    finally:
        logger.removeFilter(tenant_filter)
    failures = [r for r in _records(caplog, handle.id) if r.levelno >= logging.WARNING]
    assert [r.tenant for r in failures] == ["acme", "acme"]  # type: ignore[attr-defined]
    assert seen[0][0] is True and seen[0][1] is not None and seen[0][1] >= 0
    assert seen[1] == (False, None)


async def test_shutdown_logs_the_jobs_it_hands_back(
    queue: qa.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    started = anyio.Event()

    @queue.task(name="long")
    async def long() -> None:
        started.set()
        await anyio.sleep(60)

    handle = await long.enqueue()
    worker = qa.Worker(queue, **{**FAST, "shutdown_grace": 0.1})
    with caplog.at_level(logging.INFO, logger="queue_async"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(10):
                await started.wait()
            worker.stop()
    (handed,) = [r for r in _records(caplog, handle.id) if "handed back" in r.getMessage()]
    assert handed.levelno == logging.INFO
    assert await handle.status() is qa.JobStatus.READY


def test_the_json_formatter_writes_one_object_with_the_job_fields() -> None:
    try:
        raise KeyError("missing")
    except KeyError:
        record = logging.LogRecord(
            "queue_async.worker", logging.ERROR, __file__, 1, "job %s failed", ("j1",),
            sys.exc_info(),
        )  # fmt: skip
    record.job_id, record.attempt = "j1", 2
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "job j1 failed" and line["level"] == "ERROR"
    assert (line["job_id"], line["attempt"], line["logger"]) == ("j1", 2, "queue_async.worker")
    assert "KeyError: 'missing'" in line["exc_info"]
    assert line["time"].endswith("+00:00")


# -- metrics ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_worker_process_serves_metrics_of_a_known_mix_of_jobs(
    app_queue: qa.Queue, app_env: dict[str, str], spawn: list[subprocess.Popen[bytes]]
) -> None:
    port = _free_port()
    handles = [await app_queue.enqueue("apps.add", i, 1) for i in range(5)]
    handles += [await app_queue.enqueue("apps.flaky") for _ in range(2)]
    doomed = await app_queue.enqueue("apps.doomed")
    spawn.append(
        subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is awaited on it
            [sys.executable, "-m", "queue_async", "worker", "tests.apps.tasks:queue",
             "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"],
            env=app_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
    )  # fmt: skip
    for handle in handles:
        await handle.result(timeout=30)
    with pytest.raises(qa.JobFailed):
        await doomed.result(timeout=30)
    await app_queue.enqueue("apps.add", 1, 1)

    @app_queue.task(name="apps.add")
    async def add(a: int, b: int) -> int: ...  # the app's, for options here

    await add.options(delay=600).enqueue(1, 1)
    queue, url = app_queue.name, f"http://127.0.0.1:{port}/metrics"
    async with httpx.AsyncClient() as client:
        with anyio.fail_after(20):
            while True:
                try:
                    samples = _samples((await client.get(url)).text)
                except httpx.TransportError:
                    samples = {}
                key = ("queue_async_jobs_total", (("outcome", "succeeded"), ("queue", queue),
                                                  ("task", "apps.add")))  # fmt: skip
                if samples.get(key, 0) >= 6:
                    break
                await anyio.sleep(0.1)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"queue": queue, **labels}.items())))]

    assert value("queue_async_jobs_started_total", task="apps.add") == 6
    assert value("queue_async_jobs_started_total", task="apps.flaky") == 4
    assert value("queue_async_jobs_total", task="apps.flaky", outcome="retry") == 2
    assert value("queue_async_jobs_total", task="apps.flaky", outcome="succeeded") == 2
    assert value("queue_async_jobs_total", task="apps.doomed", outcome="dead") == 1
    assert value("queue_async_job_duration_seconds_count", task="apps.add") == 6
    assert value("queue_async_job_wait_seconds_count", task="apps.flaky") == 4
    assert value("queue_async_job_wait_seconds_bucket", task="apps.add", le="+Inf") == 6
    # Read from Redis at scrape time: the delayed job, the dead one, the worker itself.
    assert value("queue_async_queue_jobs", state="scheduled") == 1
    assert value("queue_async_queue_jobs", state="delayed") == 1
    assert value("queue_async_queue_jobs", state="dead") == 1
    assert value("queue_async_queue_workers") == 1
    worker_gauges = [k for k in samples if k[0] == "queue_async_worker_concurrency"]
    assert [samples[k] for k in worker_gauges] == [100]


async def test_metrics_as_an_asgi_app_of_an_in_process_worker(queue: qa.Queue) -> None:
    @queue.task(name="ok")
    async def ok() -> None: ...

    metrics = Metrics()
    worker = qa.Worker(queue, observers=[metrics], **FAST)
    metrics.watch_worker(worker)
    metrics.watch_queue(queue)
    await queue.enqueue_many([ok.call() for _ in range(7)])
    await worker.run(burst=True, handle_signals=False)
    transport = httpx.ASGITransport(app=metrics.asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.text)
    labels = (("outcome", "succeeded"), ("queue", queue.name), ("task", "ok"))
    assert samples[("queue_async_jobs_total", labels)] == 7
    assert samples[("queue_async_queue_jobs", (("queue", queue.name), ("state", "ready")))] == 0
    assert worker.observers == (metrics,)  # watch_worker did not add it twice


def test_metrics_on_a_port_taken_is_a_clear_error(app_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "queue_async", "worker", "tests.apps.tasks:queue", "--burst",
             "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"],
            env=app_env, cwd=ROOT, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr.decode()


def test_the_cli_worker_logs_json_lines(app_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "queue_async", "--log-format", "json", "worker",
         "tests.apps.tasks:queue", "--burst"],
        env=app_env, cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stderr.decode().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
