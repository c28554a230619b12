"""Prefetch: a worker whose slots are all busy leases the next short jobs ahead."""

from __future__ import annotations

import anyio
import pytest

import queue_async as qa
from queue_async.worker import worker as worker_module
from tests.helpers import FAST, drain

pytestmark = pytest.mark.anyio


@pytest.fixture
def long_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count every job finished in the last 10 s as recent, so that a slow machine cannot
    turn prefetch off in the middle of a test."""
    monkeypatch.setattr(worker_module, "_PREFETCH_WINDOW", 10.0)


@pytest.mark.parametrize("prefetch", [True, False])
async def test_short_jobs_are_leased_ahead_but_never_run_past_concurrency(
    queue: qa.Queue, long_window: None, prefetch: bool
) -> None:
    running = 0
    most_running = 0
    most_leased = 0

    @queue.task
    async def short() -> None:
        nonlocal running, most_running, most_leased
        running += 1
        most_running = max(most_running, running)
        most_leased = max(most_leased, (await queue.stats()).active)
        running -= 1

    await queue.enqueue_many([short.call() for _ in range(30)])
    await drain(queue, concurrency=1, prefetch=prefetch)

    assert (await queue.stats()).processed == 30
    assert most_running == 1
    if prefetch:
        assert most_leased >= 2
    else:
        assert most_leased == 1


async def test_a_worker_busy_with_a_long_job_holds_no_job_back(queue: qa.Queue) -> None:
    release = anyio.Event()
    ran_by: dict[str, str] = {}

    @queue.task
    async def long(ctx: qa.JobContext) -> None:
        ran_by[ctx.job_id] = ctx.worker_id
        await release.wait()

    @queue.task
    async def short(ctx: qa.JobContext) -> None:
        ran_by[ctx.job_id] = ctx.worker_id

    busy = qa.Worker(queue, concurrency=1, **FAST)
    async with busy:
        first = await long.enqueue()
        with anyio.fail_after(5):
            while first.id not in ran_by:
                await anyio.sleep(0.01)
        shorts = await queue.enqueue_many([short.call() for _ in range(3)])
        # The busy worker finished nothing yet: it leases nothing ahead, and an idle worker
        # takes every other job while the long one runs.
        other = await drain(queue)
        assert {ran_by[h.id] for h in shorts} == {other.id}
        assert (await queue.stats()).active == 1
        release.set()
        assert await first.result(timeout=5) is None
    assert ran_by[first.id] == busy.id


async def test_stop_hands_back_jobs_leased_ahead_without_running_them(
    queue: qa.Queue, long_window: None
) -> None:
    started = anyio.Event()
    ran: list[str] = []

    @queue.task
    async def job(name: str) -> None:
        ran.append(name)
        if name == "blocks":
            started.set()
            await anyio.sleep(60)

    fast, blocks, spare = await queue.enqueue_many(
        [job.call("fast"), job.call("blocks"), job.call("spare")]
    )
    worker = qa.Worker(queue, concurrency=1, **{**FAST, "shutdown_grace": 0.1})
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await started.wait()
            # "spare" was leased ahead while "blocks" runs in the only slot.
            assert (await queue.stats()).active == 2
            worker.stop()

    assert ran == ["fast", "blocks"]
    for handle in (blocks, spare):
        info = await handle.info()
        assert (info.status, info.attempts) == (qa.JobStatus.READY, 0)
    assert (await fast.info()).status is qa.JobStatus.DONE
    stats = await queue.stats()
    assert (stats.ready, stats.active) == (2, 0)
