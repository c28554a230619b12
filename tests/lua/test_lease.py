"""lease.lua: recover expired leases, promote due jobs, then take ready jobs in order."""

from __future__ import annotations

import pytest

import queue_async as qa
from queue_async.broker.wire import pack_headers
from tests.lua._support import (
    LONG_MS,
    PAYLOAD,
    PRIORITY_SHIFT,
    TASK,
    enqueue,
    expire_leases,
    fields,
    job,
    lease,
    make_due,
    members,
    meta,
    ready_ids,
    server_ms,
    wait_for_server_time,
    wake_len,
)

pytestmark = pytest.mark.anyio


async def test_lease_takes_ready_jobs_and_records_the_lease(queue: qa.Queue) -> None:
    await enqueue(queue, "low", priority=1)
    await enqueue(queue, "high", priority=0)
    await queue.client.delete(queue._broker.keys.wake)

    before = await server_ms(queue)
    reply = await lease(queue, 5, lease_ms=20_000, lease_id="L7", worker_id="w-9")
    after = await server_ms(queue)

    assert reply.ids == ["high", "low"]
    assert [j.token for j in reply.jobs] == ["L7:1", "L7:2"]
    assert await members(queue, queue._broker.keys.ready) == {}
    active = await members(queue, queue._broker.keys.active)
    assert active.keys() == {"high", "low"}
    for job_id, token in (("high", "L7:1"), ("low", "L7:2")):
        job_hash = await fields(queue, job_id)
        started = int(job_hash["started"])
        assert before <= started <= after
        assert active[job_id] == started + 20_000
        assert (job_hash["state"], job_hash["token"], job_hash["worker"]) == (
            "active",
            token,
            "w-9",
        )
        assert job_hash["attempts"] == "1"
    # Nothing left to wake anyone for; the next event is the first lease running out.
    assert await wake_len(queue) == 0
    assert 0 < reply.wait_ms <= 20_000
    assert reply.scheduled == 0


async def test_lease_reply_carries_eleven_fields_per_job(queue: qa.Queue) -> None:
    await queue._broker.scripts.enqueue(
        job("set", retries=4, timeout=1500, keep=0, headers={"trace": "t-1", "tenant": "7"})
        + job("unset", payload=b"\x00\xff")
    )
    enqueued = int((await fields(queue, "set"))["enqueued"])
    raw = await queue._broker.scripts.lease(10, LONG_MS, "L", "w", 3, 1000, 10, 0, 20_000)

    # wait_ms: the first of the two new leases runs out in LONG_MS; nothing is scheduled.
    assert 0 < raw[0] <= LONG_MS
    assert raw[1] == 0
    assert raw[2] == 0  # nothing was handed to this worker's inbox
    assert len(raw) == 3 + 2 * 11
    assert raw[3:14] == [
        b"set",
        TASK.encode(),
        PAYLOAD,
        1,
        str(enqueued).encode(),
        b"4",
        b"1500",
        b"0",
        b"L:1",
        pack_headers({"trace": "t-1", "tenant": "7"}),
        str(enqueued).encode(),  # ready since its enqueue
    ]
    assert raw[14:25][2:] == [
        b"\x00\xff",
        1,
        str(enqueued).encode(),
        b"",
        b"",
        b"",
        b"L:2",
        b"",
        str(enqueued).encode(),
    ]


async def test_a_requeued_job_is_leased_with_the_time_it_became_ready_again(
    queue: qa.Queue,
) -> None:
    await enqueue(queue, "a")
    first = await lease(queue, 1)
    # A failed try retried at once: ready again now, not since its enqueue.
    await queue._broker.scripts.fail("a", first.token("a"), "boom", 0, 60_000, 100)
    readied = int((await fields(queue, "a"))["readied"])
    raw = await queue._broker.scripts.lease(10, LONG_MS, "L2", "w", 3, 1000, 10, 0, 20_000)
    assert int(raw[3 + 10]) == readied >= int((await fields(queue, "a"))["enqueued"])


async def test_lease_takes_at_most_count_and_wakes_for_the_rest(queue: qa.Queue) -> None:
    await enqueue(queue, "a", "b", "c")
    await queue.client.delete(queue._broker.keys.wake)

    reply = await lease(queue, 2)

    assert reply.ids == ["a", "b"]
    assert reply.wait_ms == 0
    assert await ready_ids(queue) == ["c"]
    assert set(await members(queue, queue._broker.keys.active)) == {"a", "b"}
    assert (await fields(queue, "c"))["state"] == "ready"
    assert await wake_len(queue) == 1


async def test_lease_on_empty_queue_replies_minus_one_and_writes_nothing(
    queue: qa.Queue,
) -> None:
    reply = await lease(queue, 10)
    assert (reply.wait_ms, reply.scheduled, reply.jobs) == (-1, 0, [])
    assert await queue.client.keys(f"{queue._broker.keys.prefix}*") == []


async def test_lease_reply_wait_ms_reflects_next_due_job(queue: qa.Queue) -> None:
    await enqueue(queue, "in-5s", delay_ms=5000)
    await enqueue(queue, "in-60s", delay_ms=60_000)

    reply = await lease(queue, 10)
    assert reply.jobs == []
    assert reply.scheduled == 2
    assert 4000 < reply.wait_ms <= 5000

    # A lease that runs out before the next scheduled job is the next thing to wait for.
    await enqueue(queue, "now")
    reply = await lease(queue, 10, lease_ms=2000)
    assert reply.ids == ["now"]
    assert reply.scheduled == 2
    assert 1000 < reply.wait_ms <= 2000

    # Once the lease is gone, the next scheduled job is.
    await queue.client.zrem(queue._broker.keys.active, "now")
    reply = await lease(queue, 10)
    assert 3000 < reply.wait_ms <= 5000


async def test_lease_promotes_due_scheduled_jobs(queue: qa.Queue) -> None:
    await enqueue(queue, "due", priority=2, delay_ms=60_000)
    await enqueue(queue, "not-due", delay_ms=60_000)
    await enqueue(queue, "ready", priority=5)
    await make_due(queue, "due")

    reply = await lease(queue, 1)

    # The promoted job takes its place by priority: ahead of the priority-5 job.
    assert reply.ids == ["due"]
    assert reply.scheduled == 1
    assert set(await members(queue, queue._broker.keys.scheduled)) == {"not-due"}
    job_hash = await fields(queue, "due")
    assert job_hash["state"] == "active"
    assert "due" not in job_hash
    assert (await fields(queue, "not-due"))["state"] == "scheduled"
    assert await ready_ids(queue) == ["ready"]


async def test_lease_promotes_job_whose_delay_ran_out(queue: qa.Queue) -> None:
    await enqueue(queue, "soon", delay_ms=30)
    due = int((await fields(queue, "soon"))["due"])
    assert (await lease(queue, 1)).ids == []
    await wait_for_server_time(queue, due)
    assert (await lease(queue, 1)).ids == ["soon"]


async def test_promoted_job_joins_the_back_of_its_priority(queue: qa.Queue) -> None:
    await enqueue(queue, "scheduled-first", "urgent-scheduled", delay_ms=60_000)
    await queue.client.hset(queue._broker.keys.job("urgent-scheduled"), "priority", "-1")
    await enqueue(queue, "ready-later")
    await enqueue(queue, "urgent-later", priority=-1)
    await make_due(queue, "scheduled-first", "urgent-scheduled")
    await queue._broker.scripts.recover(3, 1000, 10)
    assert await ready_ids(queue) == [
        "urgent-later",
        "urgent-scheduled",
        "ready-later",
        "scheduled-first",
    ]
    ready = await members(queue, queue._broker.keys.ready)
    assert ready["urgent-scheduled"] // PRIORITY_SHIFT == -1


async def test_expired_lease_returns_job_to_ready(queue: qa.Queue) -> None:
    await enqueue(queue, "stalled", priority=3)
    await lease(queue, 1, lease_ms=1, lease_id="first", worker_id="dead-worker", grace_ms=0)
    deadline = (await members(queue, queue._broker.keys.active))["stalled"]
    await wait_for_server_time(queue, deadline)

    # A higher-priority job takes the one free slot, so the recovered job stays ready.
    await enqueue(queue, "urgent", priority=0)
    reply = await lease(queue, 1, lease_id="second", worker_id="live-worker")

    assert reply.ids == ["urgent"]
    assert reply.wait_ms == 0
    assert set(await members(queue, queue._broker.keys.active)) == {"urgent"}
    ready = await members(queue, queue._broker.keys.ready)
    assert set(ready) == {"stalled"}
    assert ready["stalled"] // PRIORITY_SHIFT == 3
    job_hash = await fields(queue, "stalled")
    assert job_hash["state"] == "ready"
    assert job_hash["stalls"] == "1"
    assert job_hash["attempts"] == "1"
    assert "token" not in job_hash
    assert "worker" not in job_hash
    assert await wake_len(queue) == 1

    reply = await lease(queue, 1, lease_id="third")
    assert reply.ids == ["stalled"]
    assert reply.jobs[0].attempts == 2
    assert reply.jobs[0].token == "third:1"


async def test_stalls_beyond_max_send_job_to_dead(queue: qa.Queue) -> None:
    await enqueue(queue, "flaky")
    for n in (1, 2):
        assert (await lease(queue, 1, max_stalls=1, lease_id=f"L{n}")).ids == ["flaky"]
        await expire_leases(queue, "flaky")

    before = await server_ms(queue)
    reply = await lease(queue, 1, max_stalls=1, lease_id="L3")
    after = await server_ms(queue)

    assert reply.jobs == []
    assert reply.wait_ms == -1
    dead = await members(queue, queue._broker.keys.dead)
    assert set(dead) == {"flaky"}
    assert before <= dead["flaky"] <= after
    job_hash = await fields(queue, "flaky")
    assert job_hash["state"] == "dead"
    assert job_hash["stalls"] == "2"
    assert job_hash["attempts"] == "2"
    assert int(job_hash["finished"]) == dead["flaky"]
    assert "lease expired 2 times" in job_hash["error"]
    assert not {"token", "worker", "due"} & job_hash.keys()
    assert await members(queue, queue._broker.keys.active) == {}
    assert await members(queue, queue._broker.keys.ready) == {}


async def test_max_stalls_zero_sends_job_to_dead_at_first_expiry(queue: qa.Queue) -> None:
    await enqueue(queue, "once")
    await lease(queue, 1)
    await expire_leases(queue, "once")
    await lease(queue, 1, max_stalls=0)
    assert (await fields(queue, "once"))["state"] == "dead"


async def test_job_sent_to_dead_by_stalls_counts_as_failed(queue: qa.Queue) -> None:
    """QueueStats.failed is "jobs that went to dead after running": stalled ones too."""
    await enqueue(queue, "stalled")
    await lease(queue, 1)
    await expire_leases(queue, "stalled")
    await lease(queue, 1, max_stalls=0)
    assert (await fields(queue, "stalled"))["state"] == "dead"
    assert (await meta(queue)).get("failed") == 1


async def test_stall_to_dead_trims_dead_set(queue: qa.Queue) -> None:
    await enqueue(queue, "old-dead", "stalled")
    await lease(queue, 2)
    await queue._broker.scripts.fail("old-dead", "lease-1:1", "boom", -1, 3_600_000, 10)
    await queue.client.zadd(queue._broker.keys.dead, {"old-dead": await server_ms(queue) - 1000})
    await expire_leases(queue, "stalled")

    await lease(queue, 1, max_stalls=0, dead_max_len=1)

    assert set(await members(queue, queue._broker.keys.dead)) == {"stalled"}
    assert await fields(queue, "old-dead") == {}


async def test_lease_skips_ids_whose_job_is_gone(queue: qa.Queue) -> None:
    await enqueue(queue, "gone", "kept")
    assert await queue.client.hdel(queue._broker.keys.fresh, "gone") == 1

    reply = await lease(queue, 2)

    assert reply.ids == ["kept"]
    assert reply.jobs[0].token == "lease-1:1"
    assert set(await members(queue, queue._broker.keys.active)) == {"kept"}
    assert await members(queue, queue._broker.keys.ready) == {}
    assert await queue.client.exists(queue._broker.keys.job("gone")) == 0


async def test_lease_of_a_full_batch_takes_every_job(queue: qa.Queue) -> None:
    """WorkerSettings allows lease_batch up to 10_000: one lease must take that many."""
    metadata = qa.WorkerSettings.model_fields["lease_batch"].metadata
    count = next(m.le for m in metadata if hasattr(m, "le"))
    await enqueue(queue, *[f"j{i}" for i in range(count)])

    reply = await lease(queue, count)

    assert len(reply.jobs) == count
    assert await queue.client.zcard(queue._broker.keys.active) == count
    assert await queue.client.zcard(queue._broker.keys.ready) == 0


async def test_held_jobs_go_back_in_front_of_later_jobs_in_their_order(queue: qa.Queue) -> None:
    await queue._broker.scripts.pause(TASK)
    await enqueue(queue, "h1", "h2")
    assert (await lease(queue, 10)).ids == []
    # Held jobs got their own hash (a gate records itself on the job).
    assert await queue.client.hlen(queue._broker.keys.fresh) == 0
    assert (await fields(queue, "h1"))["held"] == f"p:{TASK}"
    await enqueue(queue, "later", task="other")

    assert await queue._broker.scripts.resume(TASK) == 2
    assert await ready_ids(queue) == ["h1", "h2", "later"]
    assert (await lease(queue, 10)).ids == ["h1", "h2", "later"]
