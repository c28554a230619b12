"""stats.lua: a queue's counts, latency and counters, read at one moment, changing nothing."""

from __future__ import annotations

import json

import pytest

import queue_async as qa
from queue_async.broker.stats import read_stats
from tests.helpers import keys_of
from tests.lua._support import (
    DEAD_AGE_MS,
    DEAD_LEN,
    LONG_MS,
    enqueue,
    lease,
    lease_one,
    make_due,
    server_ms,
)

pytestmark = pytest.mark.anyio


async def stats(queue: qa.Queue) -> qa.QueueStats:
    return await read_stats(queue._broker.scripts, queue.name)


async def test_an_empty_queue_has_zero_everything(queue: qa.Queue) -> None:
    got = await stats(queue)

    assert got.model_dump() == qa.QueueStats(
        queue=queue.name, ready=0, scheduled=0, active=0, dead=0, processed=0, failed=0,
        retried=0, workers=0,
    ).model_dump()  # fmt: skip
    assert await keys_of(queue) == set()


async def test_ready_counts_leave_out_cancelled_tombstones(queue: qa.Queue) -> None:
    await enqueue(queue, "a", "b", "c")
    await enqueue(queue, "p", priority=5)
    assert await queue.cancel("a")

    got = await stats(queue)

    assert got.ready == 3


async def test_latency_is_the_age_of_the_next_job_to_lease_past_tombstones(
    queue: qa.Queue,
) -> None:
    await enqueue(queue, "cancelled", "next")
    await enqueue(queue, "later", priority=5)
    assert await queue.cancel("cancelled")
    # "next" is a fresh record (enqueued ms first); give it an age of 30 s.
    now = await server_ms(queue)
    await queue.client.hdel(queue._broker.keys.fresh, "next")
    await queue.client.hset(
        queue._broker.keys.job("next"),
        mapping={"state": "ready", "task": "t", "payload": "[]", "enqueued": now - 30_000},
    )

    got = await stats(queue)

    assert 30 <= got.latency < 40


async def test_latency_of_a_fresh_job_grows_from_its_enqueue(queue: qa.Queue) -> None:
    before = await server_ms(queue)
    await enqueue(queue, "a")
    first = await stats(queue)
    after = await server_ms(queue)

    assert 0 <= first.latency <= (after - before) / 1000 + 0.001


async def test_a_negative_priority_job_goes_first_and_sets_the_latency(queue: qa.Queue) -> None:
    await enqueue(queue, "fifo")
    await enqueue(queue, "urgent", priority=-1)
    reply = await lease(queue, 1)
    assert reply.ids == ["urgent"]
    await enqueue(queue, "urgent2", priority=-1)
    key = queue._broker.keys.job("urgent2")
    assert await queue.client.exists(key) == 0  # fresh
    await queue.cancel("urgent2")  # gives it a hash: no longer ready

    got = await stats(queue)

    assert got.ready == 1
    assert got.latency < 5


async def test_a_promoted_job_waits_from_its_due_time_not_its_enqueue(queue: qa.Queue) -> None:
    await enqueue(queue, "a", delay_ms=LONG_MS)
    await make_due(queue, "a")  # due a second ago
    due = await queue.client.zscore(queue._broker.keys.scheduled, "a")
    assert due is not None

    await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN)
    got = await stats(queue)

    assert got.ready == 1
    assert got.scheduled == 0
    assert 1.0 <= got.latency < 5
    readied = await queue.client.hget(queue._broker.keys.job("a"), "readied")
    assert readied is not None and int(readied) == int(due)


async def test_retrying_and_delayed_split_scheduled(queue: qa.Queue) -> None:
    token = await lease_one(queue, "r")
    await queue._broker.scripts.fail("r", token, "boom", 60_000, DEAD_AGE_MS, DEAD_LEN)
    await enqueue(queue, "d1", "d2", delay_ms=60_000)

    got = await stats(queue)

    assert (got.scheduled, got.retrying, got.delayed) == (3, 1, 2)
    assert got.retried == 1
    assert got.latency == 0


async def test_the_active_split_comes_from_live_heartbeats(queue: qa.Queue) -> None:
    await enqueue(queue, "a", "b", "c", "d")
    reply = await lease(queue, 4)
    pairs: list[str | bytes | int] = [x for j in reply.jobs for x in (j.id, j.token)]
    beat = json.dumps({"id": "worker-1", "active": 1, "prefetched": 2, "jobs": [{"id": "a"}]})
    await queue._broker.scripts.extend(LONG_MS, "worker-1", beat.encode(), LONG_MS, pairs)
    # A worker whose heartbeat expired is not counted.
    await queue.client.zadd(queue._broker.keys.workers, {"gone": await server_ms(queue)})

    got = await stats(queue)

    assert (got.leased, got.active, got.prefetched, got.workers) == (4, 2, 2, 1)


async def test_prefetched_never_exceeds_the_leased_jobs(queue: qa.Queue) -> None:
    beat = json.dumps({"id": "w", "active": 0, "prefetched": 5})
    await queue._broker.scripts.extend(LONG_MS, "w", beat.encode(), LONG_MS, [])

    got = await stats(queue)

    assert (got.leased, got.active, got.prefetched) == (0, 0, 0)


async def test_held_jobs_are_counted_per_task_and_per_key(queue: qa.Queue) -> None:
    await queue.pause("paused.task")
    await enqueue(queue, "p1", "p2", task="paused.task")
    await enqueue(queue, "free")
    await lease(queue, 10)
    await queue.client.zadd(queue._broker.keys.held("k:tenant-1"), {"x": 1})
    await queue.client.sadd(queue._broker.keys.gated, "k:tenant-1")

    got = await stats(queue)

    assert got.held == 3
    assert got.held_by_task == {"paused.task": 2}
    assert got.held_by_key == {"tenant-1": 1}
    assert got.paused_tasks == ["paused.task"]
    assert not got.paused


async def test_every_job_gone_to_dead_is_counted_once(queue: qa.Queue) -> None:
    await enqueue(queue, "a", "b")
    reply = await lease(queue, 2)
    for job_id in ("a", "b"):
        await queue._broker.scripts.fail(
            job_id, reply.token(job_id), "x", -1, DEAD_AGE_MS, DEAD_LEN
        )
    await queue.pause()

    got = await stats(queue)

    assert (got.dead, got.died, got.failed) == (2, 2, 2)
    assert got.paused


async def test_stats_change_nothing(queue: qa.Queue) -> None:
    await enqueue(queue, "a", "b")
    await enqueue(queue, "c", delay_ms=LONG_MS)
    await lease(queue, 1)
    before = {key: await queue.client.dump(key) for key in await keys_of(queue)}

    await stats(queue)

    assert {key: await queue.client.dump(key) for key in await keys_of(queue)} == before
