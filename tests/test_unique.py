"""Unique jobs (by id, by arguments, by key) and enqueueing inside the caller's transaction."""

from __future__ import annotations

import functools

import anyio
import pydantic
import pytest
import redis.asyncio

import queue_async as qa
from tests.helpers import FAST, drain

pytestmark = pytest.mark.anyio


async def test_existing_job_id_returns_the_existing_job_while_queued_or_running(
    queue: qa.Queue,
) -> None:
    started, finish = anyio.Event(), anyio.Event()
    runs: list[int] = []

    @queue.task
    async def job(x: int) -> int:
        runs.append(x)
        started.set()
        await finish.wait()
        return x

    first = await job.options(job_id="report-7").enqueue(1)
    again = await job.options(job_id="report-7").enqueue(2)
    assert again == first
    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            await started.wait()
            running = await job.options(job_id="report-7").enqueue(3)
            assert running == first
            finish.set()
            assert await first.result(timeout=5) == 1
            worker.stop()
    assert runs == [1]
    assert (await queue.stats()).processed == 1


async def test_unique_by_arguments_dedupes_while_waiting_then_allows_a_new_job(
    queue: qa.Queue,
) -> None:
    @queue.task(unique=True)
    async def refresh(customer: str, *, full: bool = False) -> str:
        return customer

    a = await refresh.enqueue("acme", full=True)
    assert await refresh.enqueue("acme", full=True) == a
    other = await refresh.enqueue("globex", full=True)
    assert other != a
    # Per-enqueue opt-out.
    forced = await refresh.options(unique=False).enqueue("acme", full=True)
    assert forced not in (a, other)
    assert (await queue.stats()).ready == 3

    await drain(queue)
    # The first job finished: its key is released, the same arguments enqueue anew.
    fresh = await refresh.enqueue("acme", full=True)
    assert fresh != a
    assert await fresh.status() is qa.JobStatus.READY


async def test_unique_by_arguments_ignores_keyword_order(queue: qa.Queue) -> None:
    @queue.task
    async def job(**kwargs: int) -> None: ...

    first = await job.options(unique=True).enqueue(a=1, b=2)
    assert await job.options(unique=True).enqueue(b=2, a=1) == first


async def test_unique_key_holds_across_tasks_and_for_a_scheduled_job(queue: qa.Queue) -> None:
    @queue.task
    async def nightly() -> None: ...

    @queue.task
    async def manual() -> None: ...

    scheduled = await nightly.options(unique_key="rebuild-index", delay=60).enqueue()
    assert await manual.options(unique_key="rebuild-index").enqueue() == scheduled
    await scheduled.cancel()
    # Cancelled: the key is free.
    replacement = await manual.options(unique_key="rebuild-index").enqueue()
    assert replacement != scheduled


async def test_unique_key_releases_when_its_job_starts_unless_asked_to_hold_while_running(
    queue: qa.Queue,
) -> None:
    started, finish = anyio.Event(), anyio.Event()

    @queue.task
    async def sync() -> None:
        started.set()
        await finish.wait()

    waiting_only = await sync.options(unique_key="a").enqueue()
    holding = await sync.options(unique_key="b", unique_while_running=True).enqueue()
    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            while (await queue.stats()).active < 2:
                await anyio.sleep(0.01)
            second_a = await sync.options(unique_key="a").enqueue()
            second_b = await sync.options(unique_key="b").enqueue()
            assert second_a != waiting_only  # a running job does not hold "a"
            assert second_b == holding  # but it holds "b"
            finish.set()
            worker.stop()


async def test_unique_window_ends_the_key_even_if_the_job_still_waits(queue: qa.Queue) -> None:
    @queue.task
    async def job() -> None: ...

    first = await job.options(unique_key="w", unique_for=0.2, delay=60).enqueue()
    assert await job.options(unique_key="w").enqueue() == first
    # The window is a TTL on the server's clock.
    end = _now(await queue.client.time()) + 0.25
    with anyio.fail_after(5):
        while _now(await queue.client.time()) < end:
            await anyio.sleep(0.02)
    assert await job.options(unique_key="w").enqueue() != first


def _now(server_time: tuple[int, int]) -> float:
    seconds, micros = server_time
    return seconds + micros / 1e6


async def test_unique_jobs_in_one_batch_collapse_to_the_first(queue: qa.Queue) -> None:
    @queue.task(unique=True)
    async def job(x: int) -> None: ...

    handles = await queue.enqueue_many([job.call(1), job.call(2), job.call(1)])
    assert handles[0] == handles[2] and handles[0] != handles[1]
    assert (await queue.stats()).ready == 2


async def test_enqueue_in_the_callers_transaction_commits_with_it(
    queue: qa.Queue, client: redis.asyncio.Redis
) -> None:
    @queue.task
    async def send_receipt(order: int) -> int:
        return order

    async with queue.client.pipeline(transaction=True) as pipe:
        pipe.set(f"{queue._broker.keys.prefix}test:order:42", "paid")
        handle = await queue.enqueue_spec(send_receipt.call(42), pipeline=pipe)
        assert await handle.status() is None  # nothing is written before EXEC
        await pipe.execute()
    assert await handle.status() is qa.JobStatus.READY
    await drain(queue)
    assert await handle.result(timeout=1) == 42


async def test_enqueue_in_a_discarded_transaction_writes_nothing(queue: qa.Queue) -> None:
    @queue.task
    async def send_receipt(order: int) -> int:
        return order

    async with queue.client.pipeline(transaction=True) as pipe:
        handles = await queue.enqueue_many(
            [send_receipt.call(1), send_receipt.call(2)], pipeline=pipe
        )
        await pipe.reset()  # the caller gives up: DISCARD
    for handle in handles:
        assert await handle.status() is None
    stats = await queue.stats()
    assert (stats.ready, stats.scheduled) == (0, 0)


@pytest.mark.parametrize(
    "options",
    [{"unique_key": ""}, {"unique_key": "k" * 201}, {"unique_for": 0}, {"unique_for": -1}],
    ids=["empty-key", "long-key", "zero-window", "negative-window"],
)
async def test_invalid_unique_options_raise_validation_error(
    queue: qa.Queue, options: dict[str, object]
) -> None:
    @queue.task
    async def job() -> None: ...

    with pytest.raises(pydantic.ValidationError):
        job.options(**options)  # type: ignore[arg-type]
