"""Handlers that ignore cancellation, block a thread, or raise TimeoutError themselves."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time

import anyio
import pytest

import queue_async as qa
from tests.helpers import FAST, drain

pytestmark = pytest.mark.anyio


async def _ignore_cancellation_until(release: anyio.Event, started: anyio.Event) -> None:
    """A handler that swallows every cancellation until the test lets it go."""
    started.set()
    while not release.is_set():
        try:
            await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            continue


async def test_timed_out_handler_ignoring_cancellation_is_abandoned_and_its_slot_freed(
    queue: qa.Queue,
) -> None:
    release, started = anyio.Event(), anyio.Event()

    @queue.task(timeout=0.1, retries=0)
    async def rogue() -> None:
        await _ignore_cancellation_until(release, started)

    @queue.task
    async def polite(x: int) -> int:
        return x + 1

    # One slot: the second job can only run once the rogue one's slot is given up.
    worker = qa.Worker(queue, **{**FAST, "concurrency": 1, "cancel_grace": 0.3})
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(worker.run, handle_signals=False))
                stuck = await rogue.enqueue()
                await started.wait()
                after = await polite.enqueue(1)
                assert await after.result(timeout=5) == 2
                worker.stop()
    finally:
        release.set()
    info = await stuck.info()
    assert info.status is qa.JobStatus.DEAD
    assert info.error is not None and "ignored cancellation" in info.error
    assert worker.abandoned == 1


async def test_shutdown_ends_within_its_grace_when_a_handler_ignores_cancellation(
    queue: qa.Queue,
) -> None:
    release, started = anyio.Event(), anyio.Event()

    @queue.task(timeout=None)
    async def rogue() -> None:
        await _ignore_cancellation_until(release, started)

    grace, cancel_grace = 0.3, 0.3
    worker = qa.Worker(queue, **{**FAST, "shutdown_grace": grace, "cancel_grace": cancel_grace})
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(worker.run, handle_signals=False))
                handle = await rogue.enqueue()
                await started.wait()
                stopping = time.monotonic()
                worker.stop()
            took = time.monotonic() - stopping
    finally:
        release.set()
    assert took < grace + cancel_grace + 1.0
    # The job went straight back to the queue, its try not counted.
    info = await handle.info()
    assert info.status is qa.JobStatus.READY and info.attempts == 0
    assert await queue.client.zcard(queue._broker.keys.active) == 0


async def test_sync_handler_blocking_past_its_timeout_frees_its_slot(queue: qa.Queue) -> None:
    unblock = threading.Event()

    @queue.task(timeout=0.1, retries=0)
    def blocking() -> None:
        unblock.wait(20)

    @queue.task
    def quick() -> str:
        return "ok"

    worker = qa.Worker(queue, **{**FAST, "concurrency": 1})
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(worker.run, handle_signals=False))
                stuck = await blocking.enqueue()
                assert await (await quick.enqueue()).result(timeout=5) == "ok"
                worker.stop()
    finally:
        unblock.set()
    info = await stuck.info()
    assert info.status is qa.JobStatus.DEAD
    assert info.error is not None and "timed out after 0.1 s" in info.error


async def test_timeout_error_raised_by_a_handler_is_its_own_error(queue: qa.Queue) -> None:
    @queue.task(retries=0, timeout=30)
    async def calls_out() -> None:
        raise TimeoutError("the upstream API did not answer")

    handle = await calls_out.enqueue()
    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(10):
        await worker.run(burst=True, handle_signals=False)
    info = await handle.info()
    assert info.status is qa.JobStatus.DEAD
    assert info.error is not None
    assert "the upstream API did not answer" in info.error
    assert "timed out after" not in info.error


async def test_kill_hands_back_jobs_whose_handlers_never_started(queue: qa.Queue) -> None:
    started = anyio.Event()

    @queue.task
    async def sleeper() -> None:
        started.set()
        await anyio.sleep(30)

    handles = await queue.enqueue_many([sleeper.call() for _ in range(50)])
    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            await started.wait()
            worker.kill()
    stats = await queue.stats()
    assert (stats.ready, stats.active) == (50, 0)
    for handle in handles:
        assert (await handle.info()).attempts == 0


async def test_a_handler_blocking_the_event_loop_is_named_before_its_lease_expires(
    queue: qa.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="queue_async")

    @queue.task
    async def blocks() -> None:
        time.sleep(1.6)  # noqa: ASYNC251 - the mistake under test

    handle = await blocks.enqueue()
    await drain(queue, lease=3.0, heartbeat=1.0)
    assert (await handle.info()).status is qa.JobStatus.DONE
    text = caplog.text
    assert "event loop was blocked for" in text
    assert f"job {handle.id} (task {blocks.name})" in text
    assert "anyio.to_thread.run_sync" in text
    assert "ran again after" in text


async def test_a_timed_out_sync_handler_is_abandoned_and_never_overlaps_its_next_try(
    queue: qa.Queue,
) -> None:
    lock = threading.Lock()
    per_job: dict[str, int] = {}
    most_at_once: list[int] = [0, 0]  # of one job, of all jobs
    threads_seen: list[int] = []
    started: list[str] = []

    @queue.task(timeout=0.1, retries=2, backoff_base=0.01)
    def slow(ctx: qa.JobContext) -> None:
        with lock:
            started.append(ctx.job_id)
            per_job[ctx.job_id] = per_job.get(ctx.job_id, 0) + 1
            most_at_once[0] = max(most_at_once[0], per_job[ctx.job_id])
            most_at_once[1] = max(most_at_once[1], sum(per_job.values()))
        try:
            time.sleep(0.6)
        finally:
            with lock:
                per_job[ctx.job_id] -= 1

    handles = [await slow.enqueue() for _ in range(3)]
    worker = qa.Worker(queue, **{**FAST, "concurrency": 2})
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(worker.run, burst=True, handle_signals=False))
        with anyio.fail_after(30):
            while worker.running or not threads_seen:
                threads_seen.append(worker.threads.live)
                await anyio.sleep(0.02)
    for handle in handles:
        info = await handle.info()
        assert info.status is qa.JobStatus.DEAD and info.attempts == 3
        assert info.error is not None and "timed out after 0.1 s" in info.error
    # Every thread that started outlived its try and was abandoned (tries that timed out
    # waiting for a thread never ran), yet no two tries of one job overlapped, and the
    # threads never outnumbered the concurrency (running tries) plus as many abandoned.
    assert len(started) >= 2 and worker.abandoned == len(started)
    assert most_at_once[0] == 1
    assert max(threads_seen) <= 4 and most_at_once[1] <= 4
