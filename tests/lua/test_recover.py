"""recover.lua: what lease.lua does first, without leasing."""

from __future__ import annotations

import pytest

import queue_async as qa
from tests.lua._support import (
    DEAD_AGE_MS,
    DEAD_LEN,
    GRACE_MS,
    LONG_MS,
    enqueue,
    expire_leases,
    fields,
    lease,
    make_due,
    members,
    ready_ids,
    server_ms,
    step_clock,
    wake_len,
)

pytestmark = pytest.mark.anyio


async def test_recover_returns_expired_jobs_and_promotes_due_ones(queue: qa.Queue) -> None:
    await enqueue(queue, "stalled", "running")
    await lease(queue, 2)
    await enqueue(queue, "due", "not-due", delay_ms=60_000)
    await expire_leases(queue, "stalled")
    await make_due(queue, "due")
    await queue.client.delete(queue._broker.keys.wake)

    assert await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN) == (1, 1)

    assert await ready_ids(queue) == ["stalled", "due"]
    assert set(await members(queue, queue._broker.keys.active)) == {"running"}
    assert set(await members(queue, queue._broker.keys.scheduled)) == {"not-due"}
    stalled, due = await fields(queue, "stalled"), await fields(queue, "due")
    assert (stalled["state"], stalled["stalls"]) == ("ready", "1")
    assert not {"token", "worker"} & stalled.keys()
    assert due["state"] == "ready"
    assert "due" not in due
    assert (await fields(queue, "running"))["state"] == "active"
    assert await wake_len(queue) == 1


async def test_recover_with_nothing_to_do_returns_zeros_and_writes_nothing(
    queue: qa.Queue,
) -> None:
    assert await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN) == (0, 0)
    assert await queue.client.keys(f"{queue._broker.keys.prefix}*") == []

    await enqueue(queue, "a")
    await lease(queue, 1)
    await queue.client.delete(queue._broker.keys.wake)
    assert await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN) == (0, 0)
    assert await wake_len(queue) == 0


async def test_recover_sends_jobs_past_max_stalls_to_dead_and_trims(queue: qa.Queue) -> None:
    await enqueue(queue, "old-dead", "stalled")
    reply = await lease(queue, 2)
    await queue._broker.scripts.fail(
        "old-dead", reply.token("old-dead"), "e", -1, DEAD_AGE_MS, DEAD_LEN
    )
    await queue.client.zadd(queue._broker.keys.dead, {"old-dead": await server_ms(queue) - 1000})
    await expire_leases(queue, "stalled")
    await queue.client.delete(queue._broker.keys.wake)

    assert await queue._broker.scripts.recover(0, DEAD_AGE_MS, 1) == (1, 0)

    assert set(await members(queue, queue._broker.keys.dead)) == {"stalled"}
    assert await queue.client.exists(queue._broker.keys.job("old-dead")) == 0
    job_hash = await fields(queue, "stalled")
    assert job_hash["state"] == "dead"
    assert "lease expired 1 times" in job_hash["error"]
    assert await members(queue, queue._broker.keys.active) == {}
    assert await members(queue, queue._broker.keys.ready) == {}
    assert await wake_len(queue) == 0


async def test_recover_drops_set_entries_whose_job_hash_is_gone(queue: qa.Queue) -> None:
    await enqueue(queue, "a")
    await lease(queue, 1)
    await enqueue(queue, "b", delay_ms=60_000)
    await expire_leases(queue, "a")
    await make_due(queue, "b")
    await queue.client.delete(queue._broker.keys.job("a"), queue._broker.keys.job("b"))

    await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN)

    for key in (queue._broker.keys.ready, queue._broker.keys.scheduled, queue._broker.keys.active):
        assert await members(queue, key) == {}
    assert await queue.client.exists(queue._broker.keys.job("a"), queue._broker.keys.job("b")) == 0


async def test_an_expired_lease_is_first_suspected_and_a_heartbeat_keeps_it(
    queue: qa.Queue,
) -> None:
    # A forward step of the server clock: the holder is alive but its lease looks expired.
    await enqueue(queue, "a")
    reply = await lease(queue, 1)
    await step_clock(queue, "a", seconds=LONG_MS / 1000 + 60)
    before = await server_ms(queue)

    assert await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN) == (0, 0)

    job_hash = await fields(queue, "a")
    assert (job_hash["state"], job_hash["token"]) == ("active", reply.token("a"))
    assert int(job_hash["suspect"]) >= before
    assert "stalls" not in job_hash
    deadline = (await members(queue, queue._broker.keys.active))["a"]
    assert before + GRACE_MS <= deadline <= await server_ms(queue) + GRACE_MS

    lost, aborting = await queue._broker.scripts.extend(
        LONG_MS, "worker-1", b"{}", 60_000, ["a", reply.token("a")]
    )
    assert (lost, aborting) == ([], [])
    assert "suspect" not in await fields(queue, "a")
    assert (await members(queue, queue._broker.keys.active))["a"] >= before + LONG_MS
    assert await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN) == (0, 0)
    assert (await fields(queue, "a"))["state"] == "active"


async def test_a_suspected_lease_without_a_heartbeat_is_recovered_after_its_grace(
    queue: qa.Queue,
) -> None:
    await enqueue(queue, "a")
    await lease(queue, 1)
    await step_clock(queue, "a", seconds=LONG_MS / 1000 + 60)
    assert await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN) == (0, 0)
    # The grace passes with no heartbeat: the worker is gone.
    await step_clock(queue, "a", seconds=GRACE_MS / 1000)

    assert await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN) == (1, 0)

    job_hash = await fields(queue, "a")
    assert (job_hash["state"], job_hash["stalls"]) == ("ready", "1")
    assert not {"token", "worker", "suspect"} & job_hash.keys()
    assert await ready_ids(queue) == ["a"]


async def test_a_lease_written_without_a_grace_is_recovered_at_first_sight(
    queue: qa.Queue,
) -> None:
    # Jobs leased by an older version carry no grace field.
    await enqueue(queue, "a")
    await lease(queue, 1)
    await queue.client.hdel(queue._broker.keys.job("a"), "grace")
    await step_clock(queue, "a", seconds=LONG_MS / 1000 + 60)

    assert await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN) == (1, 0)
    assert await ready_ids(queue) == ["a"]
