"""Concurrent single calls travel together (enqueue, result waits, job reads): few round trips,
each caller its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import redis.asyncio

import queue_async as qa
from queue_async.broker.broker import Outcome
from queue_async.broker.wire import CARRIED_RESULT_MAX
from queue_async.embedded import EmbeddedServer
from tests.helpers import drain

pytestmark = pytest.mark.anyio


async def _fcalls(queue: qa.Queue) -> int:
    """Script calls the server has run since the last reset (FCALL and EVALSHA)."""
    stats = await queue.client.info("commandstats")
    return sum(
        int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_fcall", "cmdstat_evalsha")
    )


async def test_a_thousand_concurrent_enqueues_take_a_handful_of_script_calls(
    queue: qa.Queue,
) -> None:
    @queue.task
    async def job(n: int) -> int:
        return n

    await job.enqueue(-1)  # loads the scripts and checks the server once
    await queue.client.config_resetstat()
    handles = await asyncio.gather(*(job.enqueue(n) for n in range(1000)))

    assert len({h.id for h in handles}) == 1000
    assert (await queue.stats()).ready == 1001
    calls = await _fcalls(queue)
    assert calls <= 20, calls
    infos = await asyncio.gather(*(h.info() for h in handles[:50]))
    assert [info.args for info in infos] == [[n] for n in range(50)]


async def test_the_next_call_goes_out_while_the_last_callers_of_one_are_answered(
    queue: qa.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 producers in a loop: answered all at once, they would form one cohort whose calls
    the server runs while the client waits, and the other way round."""

    @queue.task
    async def job(n: int) -> None: ...

    await job.enqueue(-1)
    send = queue._enqueues._send
    sent: list[int] = []  # the size of each call, in order
    answered_before: list[int] = []  # how many callers had been answered when each went out
    answered = 0

    async def counted(jobs: list[Any]) -> Any:
        sent.append(len(jobs))
        answered_before.append(answered)
        return await send(jobs)

    monkeypatch.setattr(queue._enqueues, "_send", counted)

    async def producer() -> None:
        nonlocal answered
        for n in range(20):
            await job.enqueue(n)
            answered += 1

    await asyncio.gather(*(producer() for _ in range(200)))

    assert sum(sent) == 4000
    assert (await queue.stats()).ready == 4001
    # A call that went out before every caller of the call before it was answered.
    overlapped = [
        k for k in range(1, len(sent)) if answered_before[k] < sum(sent[:k]) and sent[k - 1] >= 32
    ]
    assert len(overlapped) >= len(sent) // 2, (sent, answered_before)


async def test_a_lone_enqueue_is_one_script_call(queue: qa.Queue) -> None:
    @queue.task
    async def job() -> None: ...

    await job.enqueue()
    await queue.client.config_resetstat()
    handle = await job.enqueue()
    assert await _fcalls(queue) == 1
    assert await handle.status() is qa.JobStatus.READY


async def test_an_encoding_error_stays_with_its_caller(queue: qa.Queue) -> None:
    @queue.task
    async def job(x: object) -> None: ...

    results = await asyncio.gather(
        *(job.enqueue(object() if n == 5 else n) for n in range(20)), return_exceptions=True
    )
    assert isinstance(results[5], qa.EncodeError)
    landed = [r for r in results if isinstance(r, qa.JobHandle)]
    assert len(landed) == 19
    assert (await queue.stats()).ready == 19


async def test_concurrent_callers_with_one_job_id_get_the_same_job(queue: qa.Queue) -> None:
    @queue.task
    async def job(n: int) -> None: ...

    handles = await asyncio.gather(*(job.options(job_id="only").enqueue(n) for n in range(50)))
    assert {h.id for h in handles} == {"only"}
    assert (await queue.stats()).ready == 1
    assert (await queue.job("only").info()).args == [0]  # the first caller's


async def test_concurrent_unique_jobs_answer_per_job(queue: qa.Queue) -> None:
    @queue.task(unique=True)
    async def job(n: int) -> None: ...

    handles = await asyncio.gather(*(job.enqueue(n % 3) for n in range(30)))
    assert len({h.id for h in handles}) == 3
    by_arg = {}
    for n, handle in enumerate(handles):
        by_arg.setdefault(n % 3, set()).add(handle.id)
    assert all(len(ids) == 1 for ids in by_arg.values())
    assert (await queue.stats()).ready == 3


async def test_a_refused_call_fails_its_callers_with_the_reason_and_writes_nothing(
    private_server: EmbeddedServer,
) -> None:
    async with qa.Queue(private_server.url, name="refused") as queue:

        @queue.task
        async def job(n: int) -> None: ...

        await job.enqueue(0)
        await queue.client.config_set("maxmemory", "1")  # every write is refused: OOM
        try:
            results = await asyncio.gather(
                *(job.enqueue(n) for n in range(1, 101)), return_exceptions=True
            )
        finally:
            await queue.client.config_set("maxmemory", "0")
        assert all(isinstance(r, qa.BrokerError) for r in results), results
        assert all("out of memory" in str(r) for r in results)
        assert (await queue.stats()).ready == 1
        # The calls after it are their own: they land.
        handles = await asyncio.gather(*(job.enqueue(n) for n in range(10)))
        assert len({h.id for h in handles}) == 10
        assert (await queue.stats()).ready == 11


async def test_cancelled_callers_neither_lose_nor_duplicate_other_jobs(queue: qa.Queue) -> None:
    @queue.task
    async def job(n: int) -> None: ...

    await job.enqueue(-1)
    outcomes: dict[int, str] = {}

    async def call(n: int) -> None:
        try:
            handle = await job.options(job_id=f"j{n}").enqueue(n)
        except asyncio.CancelledError:
            outcomes[n] = "cancelled"
            raise
        outcomes[n] = handle.id

    first = asyncio.ensure_future(call(-2))
    while not queue._enqueues._sender or queue._enqueues._waiting:
        await asyncio.sleep(0)  # until the first call is in flight
    tasks = [asyncio.ensure_future(call(n)) for n in range(300)]
    await asyncio.sleep(0)  # they wait behind it
    assert len(queue._enqueues._waiting) == 300
    for task in tasks[100:200]:
        task.cancel()
    await asyncio.gather(first, *tasks, return_exceptions=True)

    stored = {raw.decode() for raw in await queue.client.hkeys(queue._broker.keys.fresh)}
    landed = {f"j{n}" for n, outcome in outcomes.items() if outcome != "cancelled"}
    cancelled = {f"j{n}" for n, outcome in outcomes.items() if outcome == "cancelled"}
    assert cancelled == {f"j{n}" for n in range(100, 200)}
    assert landed == {f"j{n}" for n in [-2, *range(100), *range(200, 300)]}
    assert all(outcomes[int(i[1:])] == i for i in landed)
    # Those cancelled while waiting were never sent; everyone else landed once.
    ours = {f"j{n}" for n in range(-2, 300)}
    assert stored & ours == landed


async def test_enqueue_inside_a_users_transaction_is_not_combined(queue: qa.Queue) -> None:
    @queue.task
    async def job() -> None: ...

    client: redis.asyncio.Redis = queue.client
    async with client.pipeline(transaction=True) as pipe:
        handle = await queue.enqueue_spec(job.call(), pipeline=pipe)
        assert await handle.status() is None  # not sent until the transaction runs
        await pipe.execute()
    assert await handle.status() is qa.JobStatus.READY


async def test_enqueues_from_many_tasks_of_a_task_group_all_land(queue: qa.Queue) -> None:
    @queue.task
    async def job(n: int) -> None: ...

    got: list[str] = []

    async def one(n: int) -> None:
        got.append((await job.enqueue(n)).id)

    async with anyio.create_task_group() as tg:
        for n in range(500):
            tg.start_soon(one, n)
    assert len(set(got)) == 500
    assert (await queue.stats()).ready == 500


# -- result waits and job reads -------------------------------------------------------------


def _counted_outcome_reads(queue: qa.Queue, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of jobs in each outcome read that result() calls make from now on."""
    reads: list[int] = []
    outcomes = queue._outcomes._send

    async def counted(job_ids: list[str]) -> list[Outcome | None]:
        reads.append(len(job_ids))
        return await outcomes(job_ids)

    monkeypatch.setattr(queue._outcomes, "_send", counted)
    return reads


async def _all_results(
    queue: qa.Queue,
    handles: list[qa.JobHandle[Any]],
    once_waiting: Callable[[], Awaitable[None]] | None = None,
) -> dict[int, Any]:
    """Every handle's result(), awaited at once; the jobs run only once all of them wait
    (after ``once_waiting``, if given)."""
    results: dict[int, Any] = {}

    async def wait(n: int) -> None:
        results[n] = await handles[n].result(timeout=30)

    async with anyio.create_task_group() as tg:
        for n in range(len(handles)):
            tg.start_soon(wait, n)
        with anyio.fail_after(10):
            while queue._waiters.waiting < len(handles):
                await anyio.sleep(0.01)
        if once_waiting is not None:
            await once_waiting()
        await drain(queue)
    return results


async def test_a_thousand_concurrent_result_waits_take_a_handful_of_round_trips(
    queue: qa.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    @queue.task
    async def double(n: int) -> int:
        return 2 * n

    handles = await asyncio.gather(*(double.enqueue(n) for n in range(1000)))
    reads = _counted_outcome_reads(queue, monkeypatch)
    await queue.client.config_resetstat()

    async def few_watches() -> None:
        # Every job is flagged as awaited (watch.lua) before its waiter sleeps.
        watches = await _fcalls(queue)
        assert watches <= 10, watches

    results = await _all_results(queue, handles, few_watches)
    assert results == {n: 2 * n for n in range(1000)}
    # Each result came with its job's announcement: no waiter read its job.
    assert reads == []


async def test_results_too_long_to_carry_are_read_in_shared_reads(
    queue: qa.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    @queue.task
    async def long(n: int) -> str:
        return str(n) * CARRIED_RESULT_MAX

    handles = await asyncio.gather(*(long.enqueue(n) for n in range(300)))
    reads = _counted_outcome_reads(queue, monkeypatch)
    results = await _all_results(queue, handles)
    assert results == {n: str(n) * CARRIED_RESULT_MAX for n in range(300)}
    assert sum(reads) == 300
    assert len(reads) <= 30, reads  # a read carries up to 100 jobs


async def test_concurrent_info_calls_share_reads_and_each_gets_its_job(
    queue: qa.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    @queue.task
    async def job(n: int) -> None: ...

    handles = await asyncio.gather(*(job.enqueue(n) for n in range(300)))
    reads: list[int] = []
    jobs_fields = queue._reads._send

    async def counted(job_ids: list[str]) -> list[dict[str, bytes] | None]:
        reads.append(len(job_ids))
        return await jobs_fields(job_ids)

    monkeypatch.setattr(queue._reads, "_send", counted)
    missing = queue.job("not-a-job")
    infos = await asyncio.gather(
        *(h.info() for h in handles), missing.info(), return_exceptions=True
    )
    assert [info.args for info in infos[:300]] == [[n] for n in range(300)]  # type: ignore[union-attr]
    assert isinstance(infos[300], qa.JobNotFound)
    assert len(reads) <= 5, reads


async def test_a_failed_read_fails_only_the_callers_it_carried(
    queue: qa.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    @queue.task
    async def job(n: int) -> None: ...

    handles = await asyncio.gather(*(job.enqueue(n) for n in range(20)))
    jobs_fields = queue._reads._send
    in_flight, fail = anyio.Event(), anyio.Event()
    sent: list[list[str]] = []

    async def first_fails(job_ids: list[str]) -> list[dict[str, bytes] | None]:
        sent.append(job_ids)
        if len(sent) == 1:
            in_flight.set()
            await fail.wait()
            raise qa.BrokerConnectionError("connection lost while reading a job")
        return await jobs_fields(job_ids)

    monkeypatch.setattr(queue._reads, "_send", first_fails)
    first = asyncio.ensure_future(handles[0].info())
    await in_flight.wait()
    # These come while the first read is in flight: they wait, and go out together after it.
    rest = asyncio.gather(*(h.info() for h in handles[1:]))
    while len(queue._reads._waiting) < 19:
        await anyio.sleep(0.001)
    fail.set()
    with pytest.raises(qa.BrokerConnectionError, match="reading a job"):
        await first
    assert [info.args for info in await rest] == [[n] for n in range(1, 20)]
    assert [len(ids) for ids in sent] == [1, 19]
