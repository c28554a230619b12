"""Pause and resume, concurrency limits (per task and per key) and rate limits, enforced in
Lua so that they hold across any number of workers."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pydantic
import pytest

import queue_async as qa
from tests.helpers import FAST, drain

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def workers(queue: qa.Queue, count: int, **settings: Any) -> AsyncIterator[None]:
    """Several independent workers on the same queue, stopped gracefully at the end."""
    running = [qa.Worker(queue, **{**FAST, **settings}) for _ in range(count)]
    async with anyio.create_task_group() as tg:
        for worker in running:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
        try:
            yield
        finally:
            for worker in running:
                worker.stop()


class Gauge:
    """Counts jobs running at once, per key, and remembers the highest counts."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.total_peak = 0

    async def around(self, key: str, work: Callable[[], Awaitable[None]]) -> None:
        self.now[key] = self.now.get(key, 0) + 1
        self.peak[key] = max(self.peak.get(key, 0), self.now[key])
        self.total_peak = max(self.total_peak, sum(self.now.values()))
        try:
            await work()
        finally:
            self.now[key] -= 1


async def test_paused_queue_starts_nothing_until_resumed(queue: qa.Queue) -> None:
    ran: list[int] = []

    @queue.task
    async def job(i: int) -> None:
        ran.append(i)

    await queue.pause()
    handles = [await job.enqueue(i) for i in range(3)]  # enqueue still works
    assert (await queue.stats()).paused
    await drain(queue)  # a burst worker finds nothing it may take and returns
    assert ran == []
    assert [await h.status() for h in handles] == [qa.JobStatus.READY] * 3

    await queue.resume()
    assert not (await queue.stats()).paused
    await drain(queue)
    assert ran == [0, 1, 2]


async def test_resume_wakes_idle_workers_at_once(queue: qa.Queue) -> None:
    @queue.task
    async def job() -> str:
        return "ran"

    await queue.pause()
    handle = await job.enqueue()
    with anyio.fail_after(5):
        async with workers(queue, 1, max_idle_wait=30):
            assert await handle.status() is qa.JobStatus.READY
            await queue.resume()
            # Within the 30 s idle wait: the resume woke the worker.
            assert await handle.result(timeout=3) == "ran"


async def test_paused_task_is_held_while_other_tasks_run_then_resumes_in_order(
    queue: qa.Queue,
) -> None:
    ran: list[str] = []

    @queue.task
    async def report(i: int) -> None:
        ran.append(f"report{i}")

    @queue.task
    async def email(i: int) -> None:
        ran.append(f"email{i}")

    await queue.pause(report)
    for i in range(3):
        await report.enqueue(i)
        await email.enqueue(i)
    await drain(queue)
    assert ran == ["email0", "email1", "email2"]
    stats = await queue.stats()
    assert (stats.held, stats.ready, stats.paused) == (3, 0, False)

    await queue.resume(report.name)  # by name works too
    await drain(queue)
    assert ran[3:] == ["report0", "report1", "report2"]
    assert (await queue.stats()).held == 0


async def test_cancelled_held_job_never_runs(queue: qa.Queue) -> None:
    ran: list[int] = []

    @queue.task
    async def job(i: int) -> None:
        ran.append(i)

    await queue.pause(job)
    kept, dropped = await job.enqueue(1), await job.enqueue(2)
    await drain(queue)
    assert (await queue.stats()).held == 2
    assert await dropped.cancel() is True
    assert (await queue.stats()).held == 1
    await queue.resume(job)
    await drain(queue)
    assert ran == [1]
    assert await kept.status() is qa.JobStatus.DONE
    assert await dropped.status() is qa.JobStatus.CANCELLED


async def test_max_concurrency_holds_across_workers_without_blocking_other_tasks(
    queue: qa.Queue,
) -> None:
    gauge = Gauge()
    order: list[str] = []

    @queue.task(max_concurrency=2)
    async def export(i: int) -> None:
        await gauge.around("export", lambda: anyio.sleep(0.05))
        order.append("export")

    @queue.task
    async def ping(i: int) -> None:
        order.append("ping")

    # The limited jobs come first in the queue; the others must not wait behind them.
    await queue.enqueue_many([export.call(i) for i in range(12)])
    await queue.enqueue_many([ping.call(i) for i in range(12)])
    with anyio.fail_after(20):
        async with workers(queue, 3, concurrency=10):
            while (await queue.stats()).processed < 24:
                await anyio.sleep(0.02)
    assert gauge.peak["export"] == 2
    # Every ping finished while most exports were still waiting their turn.
    last_ping = max(i for i, name in enumerate(order) if name == "ping")
    assert order[:last_ping].count("export") <= 4
    stats = await queue.stats()
    assert (stats.held, stats.ready, stats.active) == (0, 0, 0)


async def test_concurrency_key_allows_one_running_job_per_customer(queue: qa.Queue) -> None:
    gauge = Gauge()

    @queue.task(concurrency_key=lambda customer, n: customer, concurrency_limit=1)
    async def sync_account(customer: str, n: int) -> None:
        await gauge.around(customer, lambda: anyio.sleep(0.03))

    await queue.enqueue_many(
        [sync_account.call(customer, n) for n in range(6) for customer in ("acme", "globex")]
    )
    with anyio.fail_after(20):
        async with workers(queue, 2, concurrency=10):
            while (await queue.stats()).processed < 12:
                await anyio.sleep(0.02)
    assert gauge.peak == {"acme": 1, "globex": 1}
    assert gauge.total_peak == 2  # the two customers did run side by side


async def test_rate_limit_spaces_job_starts_across_workers(queue: qa.Queue) -> None:
    starts: list[float] = []

    @queue.task(rate_limit="10/s")
    async def call_api(i: int) -> None:
        starts.append(time.monotonic())

    await queue.enqueue_many([call_api.call(i) for i in range(25)])
    began = time.monotonic()
    with anyio.fail_after(20):
        async with workers(queue, 2, concurrency=20):
            while (await queue.stats()).processed < 25:
                await anyio.sleep(0.02)
    assert len(starts) == 25
    # A full bucket of 10 at once, then one every 100 ms: the 25th no sooner than 1.5 s.
    for t in (0.3, 0.6, 1.0):
        assert sum(s - began < t for s in starts) <= 10 + 10 * t + 1
    assert max(starts) - began >= 1.4
    stats = await queue.stats()
    assert (stats.held, stats.dead) == (0, 0)


async def test_limits_removed_from_the_code_are_cleared_when_a_worker_starts(
    queue: qa.Queue,
) -> None:
    @queue.task(name="flow.limited", max_concurrency=1)
    async def limited() -> None: ...

    await drain(queue)  # the worker stores the limit
    assert await queue.client.hget(queue._broker.keys.gates, "limit:flow.limited") == b"1"
    queue._tasks.clear()  # as after a deploy without the limit
    queue.task(name="flow.limited")(limited.fn)
    await drain(queue)
    assert await queue.client.exists(queue._broker.keys.gates) == 0  # back to the fast path


@pytest.mark.parametrize(
    "options",
    [
        {"rate_limit": "fast"},
        {"rate_limit": "0/s"},
        {"rate_limit": "10/0s"},
        {"rate_limit": "10/fortnight"},
        {"max_concurrency": 0},
        {"concurrency_limit": 0},
    ],
    ids=["words", "zero-jobs", "zero-period", "unknown-unit", "no-concurrency", "no-key-limit"],
)
async def test_invalid_flow_options_raise_validation_error_at_decoration(
    queue: qa.Queue, options: dict[str, Any]
) -> None:
    with pytest.raises(pydantic.ValidationError):

        @queue.task(**options)
        async def job() -> None: ...


async def test_failing_concurrency_key_raises_configuration_error_and_writes_nothing(
    queue: qa.Queue,
) -> None:
    @queue.task(concurrency_key=lambda order: order["customer"])
    async def ship(order: dict[str, str]) -> None: ...

    with pytest.raises(qa.ConfigurationError, match="concurrency_key raised KeyError"):
        await ship.enqueue({"id": "7"})
    with pytest.raises(qa.ConfigurationError, match="1 to 200 characters"):
        await ship.enqueue({"customer": ""})
    assert (await queue.stats()).ready == 0


async def test_pause_of_an_invalid_task_name_raises_configuration_error(queue: qa.Queue) -> None:
    with pytest.raises(qa.ConfigurationError, match="task name"):
        await queue.pause("bad\nname")


async def test_resume_of_many_held_jobs_goes_in_bounded_steps_and_keeps_their_order(
    queue: qa.Queue,
) -> None:
    @queue.task
    async def report(i: int) -> None: ...

    await queue.pause(report)
    handles = await queue.enqueue_many([report.call(i) for i in range(2500)])
    await drain(queue)  # every job is looked at and held
    assert (await queue.stats()).held == 2500

    # One script call lets at most 1,000 go, so none holds the server for long.
    assert await queue._broker.scripts.resume_step(report.name) == 1000
    assert await queue._broker.scripts.resume(report.name) == 1500
    stats = await queue.stats()
    assert (stats.held, stats.ready) == (0, 2500)
    fifo = [i.decode() for i in await queue.client.lrange(queue._broker.keys.fifo, 0, -1)]
    assert fifo == [h.id for h in handles]


async def test_a_burst_worker_waits_for_the_completions_that_let_held_jobs_go(
    queue: qa.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion call slower than the next lease: the lease finds only held jobs, yet the
    burst worker does not stop before the completion has let the next one go."""
    scripts = type(queue._broker.scripts)
    complete = scripts.complete

    async def slow_complete(self: Any, fields: Any, **kwargs: Any) -> Any:
        await anyio.sleep(0.05)
        return await complete(self, fields, **kwargs)

    monkeypatch.setattr(scripts, "complete", slow_complete)

    @queue.task(concurrency_key=lambda n: "one", concurrency_limit=1)
    async def serial(n: int) -> int:
        return n

    handles = await queue.enqueue_many([serial.call(n) for n in range(3)])
    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(20):
        await worker.run(burst=True, handle_signals=False)
    assert [await h.result(timeout=1) for h in handles] == [0, 1, 2]
