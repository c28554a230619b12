"""Inside a running job: check-ins and progress, abort, and middleware around every job."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import queue_async as qa
from tests.helpers import FAST, drain

pytestmark = pytest.mark.anyio


async def test_checkin_and_progress_show_in_info_while_the_job_runs(queue: qa.Queue) -> None:
    reported, finish = anyio.Event(), anyio.Event()

    @queue.task
    async def long_job(ctx: qa.JobContext) -> str:
        assert await ctx.checkin("row 335000 of 1M", progress=0.335)
        assert await ctx.progress(0.5)  # keeps the last message
        reported.set()
        await finish.wait()
        return "done"

    handle = await long_job.enqueue()
    with anyio.fail_after(10):
        async with qa.Worker(queue, **FAST):
            await reported.wait()
            info = await handle.info()
            assert info.status is qa.JobStatus.ACTIVE
            assert (info.checkin, info.progress) == ("row 335000 of 1M", 0.5)
            assert info.checkin_at is not None and info.started_at is not None
            assert info.checkin_at >= info.started_at
            finish.set()
            assert await handle.result(timeout=5) == "done"


@pytest.mark.parametrize(
    ("message", "progress"),
    [("x" * 4097, None), (None, 1.5), (None, -0.1), (None, float("nan")), (None, True)],
    ids=["long-message", "above-one", "negative", "nan", "bool"],
)
async def test_invalid_checkin_raises_value_error_and_records_nothing(
    queue: qa.Queue, message: str | None, progress: float | None
) -> None:
    raised: list[BaseException] = []

    @queue.task(retries=0)
    async def reporter(ctx: qa.JobContext) -> None:
        try:
            await ctx.checkin(message, progress=progress)
        except ValueError as exc:
            raised.append(exc)

    handle = await reporter.enqueue()
    await drain(queue)
    assert len(raised) == 1
    info = await handle.info()
    assert (info.checkin, info.progress, info.checkin_at) == (None, None, None)


async def test_checkin_after_the_lease_was_lost_is_refused(queue: qa.Queue) -> None:
    lost = anyio.Event()
    outcome: list[bool] = []

    @queue.task
    async def slow(ctx: qa.JobContext) -> None:
        if ctx.attempt == 1:
            await lost.wait()
            outcome.append(await ctx.checkin("late"))

    handle = await slow.enqueue()
    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            while await handle.status() is not qa.JobStatus.ACTIVE:
                await anyio.sleep(0.01)
            # Another worker recovered the job: the token this try holds is no longer current.
            await queue.client.hset(queue._broker.keys.job(handle.id), "token", "someone-else")
            lost.set()
            while not outcome:
                await anyio.sleep(0.01)
            worker.kill()
    assert outcome == [False]
    assert (await handle.info()).checkin is None


async def test_abort_stops_a_running_job_which_ends_aborted_without_retry(
    queue: qa.Queue,
) -> None:
    started = anyio.Event()
    runs: list[int] = []

    @queue.task(retries=5)
    async def endless(ctx: qa.JobContext) -> None:
        runs.append(ctx.attempt)
        started.set()
        await anyio.sleep(60)

    handle = await endless.enqueue()
    worker = qa.Worker(queue, **{**FAST, "heartbeat": 0.1})
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            await started.wait()
            assert await handle.abort() is True
            with pytest.raises(qa.JobAborted):
                await handle.result(timeout=5)  # within about a heartbeat (0.1 s here)
            worker.stop()
    info = await handle.info()
    assert info.status is qa.JobStatus.ABORTED and info.attempts == 1
    assert runs == [1]
    stats = await queue.stats()
    assert (stats.ready, stats.scheduled, stats.active, stats.dead) == (0, 0, 0, 0)


async def test_abort_of_a_job_not_started_cancels_it_and_of_a_finished_one_does_nothing(
    queue: qa.Queue,
) -> None:
    @queue.task
    async def noop() -> None: ...

    waiting = await noop.enqueue()
    assert await waiting.abort() is True
    assert await waiting.status() is qa.JobStatus.CANCELLED
    finished = await noop.enqueue()
    await drain(queue)
    assert await finished.abort() is False
    assert await finished.status() is qa.JobStatus.DONE
    assert await queue.job("no-such-job").abort() is False


async def test_cancel_leaves_a_running_job_running(queue: qa.Queue) -> None:
    started, finish = anyio.Event(), anyio.Event()

    @queue.task
    async def job() -> str:
        started.set()
        await finish.wait()
        return "finished"

    handle = await job.enqueue()
    with anyio.fail_after(10):
        async with qa.Worker(queue, **{**FAST, "heartbeat": 0.1}):
            await started.wait()
            assert await handle.cancel() is False
            finish.set()
            assert await handle.result(timeout=5) == "finished"


async def test_middleware_wraps_every_job_in_order_and_sees_its_context(queue: qa.Queue) -> None:
    events: list[str] = []
    Next = Callable[[], Awaitable[Any]]

    @queue.middleware
    async def outer(ctx: qa.JobContext, call_next: Next) -> Any:
        events.append(f"outer>{ctx.task.rsplit('.', 1)[-1]}:{ctx.attempt}")
        result = await call_next()
        events.append("outer<")
        return result

    async def inner(ctx: qa.JobContext, call_next: Next) -> Any:
        ctx.state["tenant"] = "acme"
        events.append("inner>")
        return {"wrapped": await call_next()}

    @queue.task
    async def work(ctx: qa.JobContext, x: int) -> str:
        events.append("handler")
        return f"{ctx.state['tenant']}:{x}"

    handle = await work.enqueue(7)
    await drain(queue, middleware=[inner])
    assert await handle.result(timeout=1) == {"wrapped": "acme:7"}
    assert events == ["outer>work:1", "inner>", "handler", "outer<"]


async def test_middleware_raising_fails_the_try_like_the_handler(queue: qa.Queue) -> None:
    async def deny(ctx: qa.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        raise PermissionError(f"tenant of {ctx.job_id} is suspended")

    ran: list[int] = []

    @queue.task(retries=0)
    async def work() -> None:
        ran.append(1)

    handle = await work.enqueue()
    await drain(queue, middleware=[deny])
    info = await handle.info()
    assert info.status is qa.JobStatus.DEAD and ran == []
    assert info.error is not None and "is suspended" in info.error


async def test_middleware_that_is_not_callable_raises_configuration_error(queue: qa.Queue) -> None:
    with pytest.raises(qa.ConfigurationError, match="not callable"):
        queue.middleware("log everything")  # type: ignore[arg-type]
