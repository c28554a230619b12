"""Queue.stats() / Admin.stats() with real workers, and the registry of queues
(Admin.queues)."""

from __future__ import annotations

import anyio
import pytest

import queue_async as qa
from queue_async.broker.keys import QueueKeys
from tests.helpers import FAST, drain

pytestmark = pytest.mark.anyio


async def test_counters_follow_a_burst_of_jobs_done_retried_and_dead(queue: qa.Queue) -> None:
    @queue.task(name="ok")
    async def ok() -> None:
        return None

    @queue.task(name="bad", retries=1, backoff_base=0.01, backoff_cap=0.01)
    async def bad() -> None:
        raise RuntimeError("no")

    await queue.enqueue_many([ok.call() for _ in range(3)] + [bad.call()])
    before = await queue.stats()
    assert (before.ready, before.latency >= 0, before.processed) == (4, True, 0)

    await drain(queue)

    got = await qa.Admin(queue).stats()
    assert (got.ready, got.scheduled, got.leased, got.active, got.prefetched) == (0, 0, 0, 0, 0)
    assert (got.processed, got.retried, got.failed, got.died, got.dead) == (3, 1, 1, 1, 1)
    assert got.latency == 0
    assert got.workers == 0  # the worker deregistered as it stopped


async def test_a_retry_waiting_out_its_backoff_is_retrying_not_delayed(queue: qa.Queue) -> None:
    @queue.task(name="flaky", retries=2, backoff_base=600, backoff_cap=600)
    async def flaky() -> None:
        raise RuntimeError("later")

    await flaky.enqueue()
    await flaky.options(delay=600).enqueue()
    async with qa.Worker(queue, **FAST):
        with anyio.fail_after(10):
            while (got := await queue.stats()).retrying < 1:
                await anyio.sleep(0.02)
    assert (got.retrying, got.delayed, got.scheduled) == (1, 1, 2)


async def test_running_jobs_are_active_and_the_worker_is_counted(queue: qa.Queue) -> None:
    started = anyio.Event()
    release = anyio.Event()

    @queue.task(name="hold")
    async def hold() -> None:
        started.set()
        await release.wait()

    await hold.enqueue()
    async with qa.Worker(queue, **FAST):
        with anyio.fail_after(10):
            await started.wait()
            # The split comes from the heartbeat: wait for one sent after the job started.
            while (got := await queue.stats()).active != 1:
                await anyio.sleep(0.02)
        assert (got.leased, got.prefetched, got.workers, got.ready) == (1, 0, 1, 0)
        release.set()


async def test_every_queue_that_enqueued_or_ran_a_worker_is_listed(
    queue: qa.Queue, second: qa.Queue
) -> None:
    await queue.enqueue("some.task")
    await drain(second)  # a worker start registers its queue too
    third = qa.Queue(queue.client, name=f"{queue.name}-never-used")

    names = [s.queue for s in await qa.Admin(queue).queues()]

    assert queue.name in names and second.name in names
    assert third.name not in names
    assert names == sorted(names)
    mine = {s.queue: s for s in await qa.Admin(second).queues()}
    assert mine[queue.name].ready == 1
    assert mine[second.name].ready == 0
    await third.close()


async def test_a_registered_queue_whose_keys_are_gone_is_listed_with_zeros(
    queue: qa.Queue,
) -> None:
    await queue.enqueue("some.task")
    keys = [k async for k in queue.client.scan_iter(match=f"{queue.key_prefix}*")]
    await queue.client.delete(*keys)

    listed = {s.queue: s for s in await qa.Admin(queue).queues()}

    assert listed[queue.name].ready == 0
    assert listed[queue.name].processed == 0


async def test_names_in_the_registry_that_cannot_be_queues_are_left_out(
    queue: qa.Queue,
) -> None:
    await queue.enqueue("some.task")
    await queue.client.sadd(QueueKeys.registry(queue.prefix), "bad{name}", "")

    names = [s.queue for s in await qa.Admin(queue).queues()]

    assert queue.name in names
    assert "bad{name}" not in names and "" not in names


async def test_an_admin_for_a_queue_name_that_cannot_be_one_is_refused(queue: qa.Queue) -> None:
    with pytest.raises(qa.ConfigurationError, match="queue name"):
        qa.Admin(queue).for_queue("bad{name}")
