"""What only Sentinel shows: jobs through its URL, its pools, and failovers under load (the
client form: test_rerun_core.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import anyio
import pytest
import redis
import redis.asyncio
from redis.asyncio.sentinel import SentinelConnectionPool

import queue_async as qa
from queue_async.broker.scripts import LIBRARY
from tests.conftest import unique_name
from tests.helpers import FAST, drain
from tests.sentinel.conftest import SERVICE, LocalSentinel

pytestmark = pytest.mark.anyio


async def test_jobs_run_and_report_results_through_a_sentinel_url(
    sentinel: LocalSentinel, redis_url: str
) -> None:
    async with qa.Queue(redis_url, name=unique_name()) as q:

        @q.task(name="double")
        async def double(x: int) -> int:
            return 2 * x

        handles = [await double.enqueue(i) for i in range(5)]
        async with qa.Worker(q, concurrency=2):
            with anyio.fail_after(10):
                results = [await h.result(timeout=10) for h in handles]
        assert results == [0, 2, 4, 6, 8]
        master = redis.asyncio.Redis(port=sentinel.master_port())
        try:
            # The queue's keys are on the master the sentinels name.
            assert [key async for key in master.scan_iter(match=f"{q._broker.keys.prefix}*")]
        finally:
            await master.aclose()


@dataclass
class FailoverRun:
    """What producers and the worker did around a failover, and what the new master holds."""

    acknowledged: list[str] = field(default_factory=list)
    """Ids of the jobs whose enqueue returned, in order."""
    acknowledged_after_failover: int = 0
    enqueue_errors: list[str] = field(default_factory=list)
    killed_at_ms: int = 0
    done: int = 0
    lost: list[str] = field(default_factory=list)
    """Acknowledged, but not on the new master: writes replication had not carried over."""
    other: dict[str, str] = field(default_factory=dict)
    last_done_before_kill_ms: int = 0
    first_done_after_kill_ms: int = 0
    promoted_after: float = 0.0
    """Seconds from the master going to every sentinel naming the new one."""

    @property
    def interruption(self) -> float:
        """Seconds from the master going to the first job done after it."""
        return (self.first_done_after_kill_ms - self.killed_at_ms) / 1000


async def produce(
    work: qa.Task[[int], int], label: str, run: FailoverRun, stop: anyio.Event
) -> None:
    """Enqueue jobs one at a time until told to stop; an enqueue that fails is repeated with
    the same job id (so a repeat of one that did land adds nothing)."""
    for i in itertools.count():
        if stop.is_set():
            return
        job_id = f"{label}-{i}"
        with anyio.fail_after(30):
            while True:
                try:
                    await work.options(job_id=job_id).enqueue(i)
                    break
                except qa.BrokerConnectionError as exc:
                    run.enqueue_errors.append(type(exc.__cause__).__name__)
                    await anyio.sleep(0.02)
        run.acknowledged.append(job_id)
        await anyio.sleep(0.005)


async def account(q: qa.Queue, run: FailoverRun) -> None:
    """Every acknowledged job is done, or lost to asynchronous replication; nothing else."""
    rows = await q._broker.jobs_fields(run.acknowledged)
    finished = []
    for job_id, fields in zip(run.acknowledged, rows, strict=True):
        if fields is None:
            run.lost.append(job_id)
        elif fields.get("state") == b"done":
            run.done += 1
            finished.append(int(fields["finished"]))
        else:
            run.other[job_id] = fields.get("state", b"?").decode()
    run.last_done_before_kill_ms = max((t for t in finished if t < run.killed_at_ms), default=0)
    run.first_done_after_kill_ms = min((t for t in finished if t >= run.killed_at_ms), default=0)


async def fail_over_under_load(
    deployment: LocalSentinel, fail: Callable[[], int], run: FailoverRun
) -> tuple[int, int]:
    """Two producers enqueue and a worker processes while ``fail()`` takes the master away
    (returning its port); then until the failover is done and 100 more jobs were enqueued,
    and until every job has ended. Fills ``run``; returns the old and the new master's port."""
    async with qa.Queue(deployment.url, name=unique_name()) as q:

        @q.task(name="work", retries=20, backoff_base=0.05, backoff_cap=0.2)
        async def work(i: int) -> int:
            await anyio.sleep(0.005)
            return i

        # Enqueued before the failover, due after it: its waiter spans the failover.
        spanning = await work.options(delay=timedelta(seconds=4)).enqueue(-1)
        stop = anyio.Event()
        settings = {**FAST, "reconnect_max": 0.25}
        async with qa.Worker(q, concurrency=10, **settings) as worker:
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce, work, "a", run, stop)
                tg.start_soon(produce, work, "b", run, stop)
                with anyio.fail_after(10):
                    while len(run.acknowledged) < 100:
                        await anyio.sleep(0.02)
                old = await anyio.to_thread.run_sync(fail)
                run.killed_at_ms = int(time.time() * 1000)
                new = await anyio.to_thread.run_sync(deployment.wait_failover, old)
                run.promoted_after = time.time() - run.killed_at_ms / 1000
                failed_over = len(run.acknowledged)
                with anyio.fail_after(20):
                    while len(run.acknowledged) < failed_over + 100:
                        await anyio.sleep(0.02)
                stop.set()
            run.acknowledged_after_failover = len(run.acknowledged) - failed_over
            with anyio.fail_after(20):
                assert await spanning.result(timeout=20) == -1
                while (s := await q.stats()).ready or s.scheduled or s.active:
                    await anyio.sleep(0.1)
            assert worker.running
        await account(q, run)
    print(
        f"\nfailover {old} -> {new}, named by every sentinel {run.promoted_after:.3f} s after "
        f"the master went: {len(run.acknowledged)} jobs acknowledged "
        f"({run.acknowledged_after_failover} after the failover), {run.done} done, "
        f"{len(run.lost)} lost; enqueue errors during the failover: "
        f"{Counter(run.enqueue_errors)}; last job done before the master went "
        f"{(run.killed_at_ms - run.last_done_before_kill_ms) / 1000:.3f} s before, first "
        f"done after {run.interruption:.3f} s after"
    )
    assert new != old
    assert run.other == {}, "acknowledged jobs neither done nor lost"
    assert run.done + len(run.lost) == len(run.acknowledged)
    assert run.acknowledged_after_failover >= 100
    return old, new


@pytest.mark.timeout(90)
async def test_producers_and_a_worker_continue_on_the_promoted_replica_after_the_master_dies(
    own_sentinel: LocalSentinel,
) -> None:
    run = FailoverRun()
    await fail_over_under_load(own_sentinel, own_sentinel.kill_master, run)
    # Gone when killed_at_ms was taken, so what finished later finished on the new master.
    # The sentinels take about 2.3 s here (down-after 1 s, then an election); the worker
    # starts again within its backoff (0.25 s) of the promotion.
    assert 0 < run.interruption < 10


@pytest.mark.timeout(90)
async def test_a_manual_failover_loses_only_what_the_old_master_took_before_its_demotion(
    own_sentinel: LocalSentinel,
) -> None:
    # SENTINEL FAILOVER promotes the replica while the old master still runs: connections
    # opened to it before keep writing there until the sentinels make it a replica (and
    # close them), and those writes are lost. Counted, not asserted away.
    run = FailoverRun()

    def manual() -> int:
        old = own_sentinel.master_port()
        with redis.Redis(port=own_sentinel.sentinel_ports[0]) as sentinel:
            sentinel.sentinel_failover(SERVICE)
        return old

    await fail_over_under_load(own_sentinel, manual, run)
    # The sentinels demote the old master about 10 s after the promotion; the pools leave it
    # within _MASTER_CHECK (0.5 s) of the sentinels naming the new master, about 0.7 s of
    # writes here (without that check they stayed until the demotion: 92 % lost).
    assert len(run.lost) < len(run.acknowledged) / 3


async def enqueue_through(work: qa.Task[[int], int], i: int) -> qa.JobHandle[int]:
    """Enqueue, repeating while the deployment has no master to take it."""
    with anyio.fail_after(20):
        while True:
            try:
                return await work.options(job_id=f"job-{i}").enqueue(i)
            except qa.BrokerConnectionError:
                await anyio.sleep(0.05)


async def test_a_promoted_replica_without_the_function_library_gets_it(
    own_sentinel: LocalSentinel,
) -> None:
    old = own_sentinel.master_port()
    (other,) = (port for port in own_sentinel.data_ports if port != old)
    replica = redis.asyncio.Redis(port=other)
    try:
        async with qa.Queue(own_sentinel.url, name=unique_name()) as q:

            @q.task(name="work")
            async def work(i: int) -> int:
                return i

            first = await enqueue_through(work, 1)
            await drain(q)
            assert await first.result(timeout=5) == 1
            # The replica lost the library the master loaded (writable only for this).
            await replica.config_set("replica-read-only", "no")
            await replica.function_flush()
            assert not await replica.function_list(library=LIBRARY.name)
            await anyio.to_thread.run_sync(own_sentinel.kill_master)
            assert await anyio.to_thread.run_sync(own_sentinel.wait_failover, old) == other

            second = await enqueue_through(work, 2)  # "function not found": loaded, called
            await drain(q)
            assert await second.result(timeout=5) == 2
            assert await replica.function_list(library=LIBRARY.name)
    finally:
        await replica.aclose()


def test_one_queue_serves_successive_event_loops(redis_url: str) -> None:
    # A module-level Queue used by successive asyncio.run calls: its pools, and its clients
    # of the sentinels, open new connections on each new loop.
    q = qa.Queue(redis_url, name=unique_name())

    @q.task(name="echo")
    async def echo(x: int) -> int:
        return x

    async def one(x: int) -> int:
        handle = await echo.enqueue(x)
        await drain(q)
        return await handle.result(timeout=5)

    try:
        assert [asyncio.run(one(x)) for x in range(3)] == [0, 1, 2]
    finally:
        asyncio.run(q.close())


async def test_callers_beyond_max_connections_wait_for_a_free_one(redis_url: str) -> None:
    async with qa.Queue(redis_url, name=unique_name(), max_connections=2) as q:
        assert isinstance(q.client.connection_pool, SentinelConnectionPool)
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(q.enqueue_many, [q.call("job", i)])
        assert (await q.stats()).ready == 200
        assert len(q.client.connection_pool._in_use_connections) == 0
        assert len(q.client.connection_pool._available_connections) <= 2
