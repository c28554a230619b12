"""cancel.lua: cancel a job that has not started; flag a running one."""

from __future__ import annotations

import pytest

import queue_async as qa
from tests.lua._support import (
    DEAD_AGE_MS,
    DEAD_LEN,
    TASK,
    enqueue,
    fields,
    lease,
    members,
    ready_ids,
    server_ms,
)

pytestmark = pytest.mark.anyio


async def test_cancel_ready_job_removes_it_and_abort_flags_an_active_job(queue: qa.Queue) -> None:
    await enqueue(queue, "running")
    reply = await lease(queue, 1)
    await enqueue(queue, "waiting")

    before = await server_ms(queue)
    assert await queue._broker.scripts.cancel("waiting", 60_000) == "ready"
    after = await server_ms(queue)

    job_hash = await fields(queue, "waiting")
    assert job_hash["state"] == "cancelled"
    assert before <= int(job_hash["finished"]) <= after
    assert await ready_ids(queue) == []
    assert await queue.client.hexists(queue._broker.keys.fresh, "waiting") == 0
    assert job_hash["task"] == TASK  # the fresh record became the cancelled job's hash
    assert 55_000 < await queue.client.pttl(queue._broker.keys.job("waiting")) <= 60_000

    running_before = await fields(queue, "running")
    active_before = await members(queue, queue._broker.keys.active)
    assert await queue._broker.scripts.cancel("running", 60_000) == "active"
    assert await fields(queue, "running") == running_before  # cancel leaves it running
    assert await queue._broker.scripts.cancel("running", 60_000, abort=True) == "active"
    running = await fields(queue, "running")
    assert running.pop("abort") == "1"
    assert running == running_before  # still active, same token: only flagged
    assert await members(queue, queue._broker.keys.active) == active_before
    assert await queue.client.pttl(queue._broker.keys.job("running")) == -1
    # The running job's worker still owns it and may finish it.
    assert await queue._broker.scripts.complete(
        ["running", reply.token("running"), b"r", 1000]
    ) == [1]


async def test_cancel_scheduled_job_removes_it_and_its_due_time(queue: qa.Queue) -> None:
    await enqueue(queue, "later", delay_ms=60_000)
    assert await queue._broker.scripts.cancel("later", 60_000) == "scheduled"
    job_hash = await fields(queue, "later")
    assert job_hash["state"] == "cancelled"
    assert "due" not in job_hash
    assert await members(queue, queue._broker.keys.scheduled) == {}
    # A cancelled job is never promoted or leased.
    assert (await lease(queue, 10)).jobs == []


async def test_cancel_missing_job_reports_missing_and_creates_nothing(queue: qa.Queue) -> None:
    assert await queue._broker.scripts.cancel("ghost", 60_000) == "missing"
    assert await queue.client.keys(f"{queue._broker.keys.prefix}*") == []


async def test_cancel_with_zero_keep_deletes_the_record(queue: qa.Queue) -> None:
    await enqueue(queue, "a")
    assert await queue._broker.scripts.cancel("a", 0) == "ready"
    assert await queue.client.exists(queue._broker.keys.job("a")) == 0
    assert await members(queue, queue._broker.keys.ready) == {}


async def test_cancel_of_finished_jobs_changes_nothing(queue: qa.Queue) -> None:
    await enqueue(queue, "done", "dead", "cancelled")
    reply = await lease(queue, 2)
    await queue._broker.scripts.complete(["done", reply.token("done"), b"r", 60_000])
    await queue._broker.scripts.fail("dead", reply.token("dead"), "e", -1, DEAD_AGE_MS, DEAD_LEN)
    assert await queue._broker.scripts.cancel("cancelled", 60_000) == "ready"

    for state in ("done", "dead", "cancelled"):
        before = await fields(queue, state)
        ttl = await queue.client.ttl(queue._broker.keys.job(state))
        assert await queue._broker.scripts.cancel(state, 5) == state
        assert await fields(queue, state) == before
        assert await queue.client.ttl(queue._broker.keys.job(state)) == ttl
    assert set(await members(queue, queue._broker.keys.dead)) == {"dead"}


async def test_cancelled_fifo_job_is_a_tombstone_that_the_next_lease_drops(
    queue: qa.Queue,
) -> None:
    """Cancel is O(1) however long fifo is: the id stays as a tombstone, counted in meta."""
    for job_id in ("a", "b", "c"):
        await enqueue(queue, job_id)
    assert await queue._broker.scripts.cancel("b", 60_000) == "ready"
    assert await queue.client.llen(queue._broker.keys.fifo) == 3
    assert await queue.client.hget(queue._broker.keys.meta, "tombstones") == b"1"
    assert (await queue.stats()).ready == 2

    reply = await lease(queue, 10)
    assert sorted(reply.ids) == ["a", "c"]
    assert await queue.client.llen(queue._broker.keys.fifo) == 0
    assert await queue.client.hget(queue._broker.keys.meta, "tombstones") == b"0"
    assert (await queue.stats()).ready == 0
