"""Job timeouts: exact timers for short ones, one shared timer per tick for the rest."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import anyio
import pytest

import queue_async as qa
from queue_async.worker.deadlines import Deadlines
from tests.helpers import drain

pytestmark = pytest.mark.anyio


@dataclass(eq=False)
class _Job:
    timer: asyncio.TimerHandle | None = None
    tick: int | None = None
    fired_at: list[float] = field(default_factory=list)

    def time_out(self) -> None:
        self.fired_at.append(asyncio.get_running_loop().time())


async def test_long_timeouts_share_their_tick_and_fire_at_most_one_tick_late() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(tick_s=0.05, shared_from_s=0.1)
    jobs = [_Job() for _ in range(50)]
    started = loop.time()
    dues = [deadlines.add(loop, job, 0.2) for job in jobs]
    # Added within one tick: at most two ticks, so at most two event-loop timers.
    assert len(set(dues)) <= 2 and len(deadlines) == 50
    assert all(job.timer is None for job in jobs)
    await asyncio.sleep(0.4)
    for job, due in zip(jobs, dues, strict=True):
        assert len(job.fired_at) == 1
        assert started + 0.2 <= job.fired_at[0] <= started + 0.2 + 0.05 + 0.1
        assert job.fired_at[0] >= due
    assert len(deadlines) == 0


async def test_a_job_removed_before_its_tick_does_not_time_out() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(tick_s=0.05, shared_from_s=0.1)
    kept, ended = _Job(), _Job()
    deadlines.add(loop, kept, 0.15)
    deadlines.add(loop, ended, 0.15)
    deadlines.remove(ended)
    assert ended.tick is None and len(deadlines) == 1
    await asyncio.sleep(0.3)
    assert len(kept.fired_at) == 1 and ended.fired_at == []


async def test_short_timeouts_keep_an_exact_timer_of_their_own() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(tick_s=10.0, shared_from_s=1.0)
    short, removed = _Job(), _Job()
    started = loop.time()
    assert deadlines.add(loop, short, 0.05) == pytest.approx(started + 0.05, abs=0.01)
    deadlines.add(loop, removed, 0.05)
    assert short.timer is not None and short.tick is None and len(deadlines) == 0
    deadlines.remove(removed)
    assert removed.timer is None
    await asyncio.sleep(0.2)
    assert len(short.fired_at) == 1 and short.fired_at[0] < started + 0.15
    assert removed.fired_at == []


async def test_a_job_past_a_long_timeout_fails_as_timed_out(queue: qa.Queue) -> None:
    """Two seconds and more share a tick's timer: the job still times out, about on time."""

    @queue.task(retries=0, timeout=2)
    async def slow() -> None:
        await anyio.sleep(30)

    handle = await slow.enqueue()
    started = time.monotonic()
    with anyio.fail_after(10):
        await drain(queue)
    took = time.monotonic() - started
    info = await handle.info()
    assert info.status is qa.JobStatus.DEAD
    assert info.error is not None and "timed out after 2 s" in info.error
    assert 2.0 <= took < 4.0


async def test_jobs_that_end_in_time_leave_no_deadline_behind(queue: qa.Queue) -> None:
    @queue.task  # the default timeout, five minutes: shared ticks
    async def quick(i: int) -> int:
        return i

    handles = await queue.enqueue_many([quick.call(i) for i in range(300)])
    worker = await drain(queue)
    assert [await h.status() for h in handles] == [qa.JobStatus.DONE] * 300
    assert len(worker._deadlines) == 0
