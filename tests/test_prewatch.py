"""Jobs flagged as awaited at enqueue: once a process waits for results, its new jobs'
result() needs no watch call, an end heard early is kept for its result(), and anything
that could make an end go unheard falls back to watching."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

import queue_async as qa
from tests.helpers import drain

pytestmark = pytest.mark.anyio


def _counted_watches(queue: qa.Queue, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of jobs in each watch call that result() calls make from now on."""
    calls: list[int] = []
    watch_many = queue._watches._send

    async def counted(job_ids: list[str]) -> Any:
        calls.append(len(job_ids))
        return await watch_many(job_ids)

    monkeypatch.setattr(queue._watches, "_send", counted)
    return calls


async def _watched(queue: qa.Queue) -> set[Any]:
    """The ids in the queue's hash of jobs awaited."""
    return set(await queue.client.hkeys(f"{queue._broker.keys.prefix}watched"))


async def _await_one(queue: qa.Queue, job: qa.Task[Any, Any]) -> None:
    """One result() call: from now on this process is one that awaits results."""
    handle = await job.enqueue(-1)
    await drain(queue)
    await handle.result(timeout=10)


async def _results_once_waiting(queue: qa.Queue, handles: list[qa.JobHandle[Any]]) -> list[Any]:
    """Every handle's result(); the jobs run only once all of them wait."""

    async def run_once_waiting() -> None:
        with anyio.fail_after(10):
            while queue._waiters.waiting < len(handles):
                await anyio.sleep(0.005)
        await drain(queue)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_once_waiting)
        results = await asyncio.gather(*(h.result(timeout=10) for h in handles))
    return list(results)


async def _heard(queue: qa.Queue, job_id: str) -> None:
    """Until the subscription has heard of the job's end."""
    with anyio.fail_after(10):
        while job_id not in queue._waiters._early:
            await anyio.sleep(0.005)


@pytest.fixture
async def echo(queue: qa.Queue) -> qa.Task[[int], int]:
    """A task that returns its argument, on a queue this process has awaited a result of."""

    @queue.task
    async def echo(n: int) -> int:
        return n

    await _await_one(queue, echo)
    return echo


async def test_a_process_that_never_awaited_a_result_flags_nothing(queue: qa.Queue) -> None:
    @queue.task
    async def job(n: int) -> int:
        return n

    await asyncio.gather(*(job.enqueue(n) for n in range(20)))
    assert await _watched(queue) == set()


async def test_once_a_process_awaits_results_its_waits_need_no_watch_call(
    queue: qa.Queue, echo: qa.Task[[int], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    watches = _counted_watches(queue, monkeypatch)
    handles = await asyncio.gather(*(echo.enqueue(n) for n in range(50)))
    assert await _watched(queue) == {h.id.encode() for h in handles}

    assert await _results_once_waiting(queue, handles) == list(range(50))
    assert watches == []
    assert await _watched(queue) == set()  # each left as its job was announced


async def test_an_end_heard_before_its_result_call_is_kept_for_it(
    queue: qa.Queue, echo: qa.Task[[int], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await echo.enqueue(42)
    await drain(queue)
    await _heard(queue, handle.id)
    watches = _counted_watches(queue, monkeypatch)
    reads: list[list[str]] = []
    outcomes = queue._outcomes._send

    async def counted(job_ids: list[str]) -> Any:
        reads.append(job_ids)
        return await outcomes(job_ids)

    monkeypatch.setattr(queue._outcomes, "_send", counted)
    assert await handle.result(timeout=5) == 42
    assert watches == [] and reads == []  # the announcement carried the result


async def test_a_failure_heard_early_is_read_for_its_result_call(queue: qa.Queue) -> None:
    @queue.task(retries=0)
    async def job(n: int) -> None:
        if n >= 0:
            raise ValueError("no luck")

    await _await_one(queue, job)
    handle = await job.enqueue(1)
    await drain(queue)
    with pytest.raises(qa.JobFailed, match="no luck"):
        await handle.result(timeout=5)


async def test_a_dropped_subscription_forgets_the_flags_and_waits_watch_again(
    queue: qa.Queue, echo: qa.Task[[int], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await echo.enqueue(3)
    assert handle.id in queue._waiters._prewatched
    # The server drops the subscription: an end announced until it is back would be lost.
    killed = await queue.client.client_kill_filter(_type="pubsub")
    assert killed >= 1
    with anyio.fail_after(10):
        while handle.id in queue._waiters._prewatched:
            await anyio.sleep(0.005)
    watches = _counted_watches(queue, monkeypatch)

    assert await _results_once_waiting(queue, [handle]) == [3]
    # Watched again: once, or twice when the wait began before the new subscription was up
    # (each renewal makes the waiters look again).
    assert watches in ([1], [1, 1]), watches


@pytest.mark.parametrize("how", ["enqueue", "enqueue_many"])
async def test_an_id_enqueued_again_after_an_end_heard_early_waits_for_its_new_run(
    queue: qa.Queue, echo: qa.Task[[int], int], how: str
) -> None:
    first = await echo.enqueue(1)
    await drain(queue)
    await _heard(queue, first.id)
    again = echo.options(job_id=first.id, replace=True)
    if how == "enqueue":
        second = await again.enqueue(2)
    else:
        [second] = await queue.enqueue_many([again.call(2)])
    assert not second.existing
    # The end heard early was the first run's: the second has not run yet.
    with pytest.raises(qa.JobTimeout):
        await second.result(timeout=0.3)
    await drain(queue)
    assert await second.result(timeout=5) == 2


async def test_a_job_of_a_given_id_is_not_flagged_and_its_wait_watches_it(
    queue: qa.Queue, echo: qa.Task[[int], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await echo.options(job_id="given").enqueue(1)
    again = await echo.options(job_id="given").enqueue(5)
    assert again.existing and first.id == again.id == "given"
    assert "given" not in queue._waiters._prewatched
    watches = _counted_watches(queue, monkeypatch)
    assert await _results_once_waiting(queue, [first, again]) == [1, 1]
    assert sorted(watches) in ([1, 1], [2])


async def test_a_refused_enqueue_leaves_nothing_flagged(
    queue: qa.Queue, echo: qa.Task[[int], int], monkeypatch: pytest.MonkeyPatch
) -> None:

    async def refused(jobs: bytes, *, watched: bool = False) -> Any:
        raise qa.BrokerConnectionError("connection lost while enqueueing a job")

    monkeypatch.setattr(queue._broker.scripts, "enqueue", refused)
    with pytest.raises(qa.BrokerConnectionError):
        await echo.enqueue(1)
    assert queue._waiters._prewatched == {}


async def test_a_flagged_job_another_wait_heard_the_end_of_is_watched_not_waited_out(
    queue: qa.Queue, echo: qa.Task[[int], int]
) -> None:
    handle = await echo.enqueue(5)
    by_id = queue.job(handle.id)  # a handle of the same job made from its id
    assert await _results_once_waiting(queue, [by_id]) == [5]
    # That wait took the announcement; the enqueuer's own handle reads the end at once,
    # instead of waiting out the 10 s recheck.
    with anyio.fail_after(3):
        assert await handle.result(timeout=30) == 5


async def test_a_zero_timeout_on_a_flagged_job_reads_its_state_before_giving_up(
    queue: qa.Queue, echo: qa.Task[[int], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await echo.enqueue(8)
    monkeypatch.setattr(queue._waiters, "_dispatch", lambda message: None)  # ends unheard
    with pytest.raises(qa.JobTimeout):
        await handle.result(timeout=0)
    await drain(queue)
    flagged = await echo.enqueue(9)
    await drain(queue)
    assert await flagged.result(timeout=0) == 9
