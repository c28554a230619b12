"""A step of the server's clock: leases are measured on it, so a forward step makes every
lease look expired at once. No job may run twice at once because of it."""

from __future__ import annotations

import functools
import logging

import anyio
import pytest

import queue_async as qa
from tests.helpers import FAST
from tests.lua._support import step_clock

pytestmark = pytest.mark.anyio


async def test_a_forward_clock_step_does_not_run_a_running_job_a_second_time(
    queue: qa.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="queue_async")
    started = anyio.Event()
    release = anyio.Event()
    runs: list[str] = []

    @queue.task(retries=3)
    async def long_job() -> str:
        runs.append("start")
        started.set()
        await release.wait()
        runs.append("end")
        return "done"

    @queue.task
    async def ping() -> str:
        return "pong"

    holder = qa.Worker(queue, **FAST)
    other = qa.Worker(queue, **FAST)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(holder.run, handle_signals=False))
            handle = await long_job.enqueue()
            await started.wait()
            tg.start_soon(functools.partial(other.run, handle_signals=False))
            await step_clock(queue, handle.id, seconds=60)
            # Work for the other worker: each lease call it makes recovers what has expired.
            for _ in range(10):
                assert await (await ping.enqueue()).result(timeout=5) == "pong"
                await anyio.sleep(0.2)
            release.set()
            assert await handle.result(timeout=5) == "done"
            holder.stop()
            other.stop()

    assert runs == ["start", "end"]
    info = await handle.info()
    assert (info.status, info.attempts) == (qa.JobStatus.DONE, 1)
    assert not [r for r in caplog.records if "lost" in r.getMessage()]


async def test_a_dead_workers_job_is_still_recovered_after_lease_and_grace(
    queue: qa.Queue,
) -> None:
    # The worker that took the job is gone without a word: its lease expires, is suspected,
    # and after the grace (two heartbeats) with no heartbeat the job runs elsewhere.
    @queue.task
    async def job() -> str:
        return "ran"

    handle = await job.enqueue()
    await queue._broker.scripts.lease(1, 300, "ghost:1", "ghost", 3, 60_000, 100, 0, 200)
    assert (await handle.info()).status is qa.JobStatus.ACTIVE
    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            assert await handle.result(timeout=8) == "ran"
            worker.stop()
    info = await handle.info()
    assert info.attempts == 2
