"""enqueue.lua: new jobs become a fresh record (or a hash) plus a ready or scheduled entry;
existing ids are kept."""

from __future__ import annotations

import pytest

import queue_async as qa
from queue_async.broker.wire import unpack_fields
from tests.lua._support import (
    PAYLOAD,
    PRIORITY_SHIFT,
    TASK,
    enqueue,
    fields,
    job,
    lease,
    members,
    ready_ids,
    server_ms,
    wake_len,
)

pytestmark = pytest.mark.anyio


async def test_enqueue_ready_job_writes_fresh_record_ready_score_and_wake(
    queue: qa.Queue,
) -> None:
    before = await server_ms(queue)
    assert await enqueue(queue, "a", priority=3) == [1]
    after = await server_ms(queue)

    # A job enqueued ready is one field of the fresh hash, not a hash of its own.
    assert await queue.client.exists(queue._broker.keys.job("a")) == 0
    record = await queue.client.hget(queue._broker.keys.fresh, "a")
    enqueued, options, task, payload = unpack_fields(record)
    assert before <= int(enqueued) <= after
    assert (unpack_fields(options)[0], task, payload) == (b"3", TASK.encode(), PAYLOAD)
    job_hash = await fields(queue, "a")
    assert job_hash == {
        "task": TASK,
        "payload": PAYLOAD.decode(),
        "priority": "3",
        "attempts": "0",
        "state": "ready",
        "enqueued": enqueued.decode(),
    }
    assert await members(queue, queue._broker.keys.ready) == {"a": 3 * PRIORITY_SHIFT + 1}
    assert await members(queue, queue._broker.keys.scheduled) == {}
    assert await queue.client.get(queue._broker.keys.seq) == b"1"
    assert await wake_len(queue) == 1


async def test_enqueue_default_priority_goes_to_fifo_without_a_sequence_number(
    queue: qa.Queue,
) -> None:
    assert await enqueue(queue, "a", "b", "c") == [1, 1, 1]
    assert await queue.client.lrange(queue._broker.keys.fifo, 0, -1) == [b"a", b"b", b"c"]
    assert await members(queue, queue._broker.keys.ready) == {}
    assert await queue.client.get(queue._broker.keys.seq) is None
    assert await queue.client.hlen(queue._broker.keys.fresh) == 3


async def test_malformed_batch_is_refused_and_changes_nothing(queue: qa.Queue) -> None:
    good = job("good")
    for bad in (good + b"2:x", good + b"999:abc", good + b"x:", good[:-1]):
        with pytest.raises(qa.BrokerError, match="malformed job batch"):
            await queue._broker.scripts.enqueue(bad)
    assert (
        await queue.client.exists(
            queue._broker.keys.fresh, queue._broker.keys.fifo, queue._broker.keys.wake
        )
        == 0
    )


async def test_enqueue_stores_optional_fields_only_when_given(queue: qa.Queue) -> None:
    await queue._broker.scripts.enqueue(
        job("given", retries=5, timeout=2000, keep=0) + job("defaults")
    )
    given, defaults = await fields(queue, "given"), await fields(queue, "defaults")
    assert (given["retries"], given["timeout"], given["keep"]) == ("5", "2000", "0")
    assert not {"retries", "timeout", "keep"} & defaults.keys()


async def test_enqueue_with_delay_schedules_job_at_due_time(queue: qa.Queue) -> None:
    before = await server_ms(queue)
    assert await enqueue(queue, "later", delay_ms=60_000) == [1]
    after = await server_ms(queue)

    job_hash = await fields(queue, "later")
    due = int(job_hash["due"])
    assert before + 60_000 <= due <= after + 60_000
    assert job_hash["state"] == "scheduled"
    assert await members(queue, queue._broker.keys.scheduled) == {"later": due}
    assert await members(queue, queue._broker.keys.ready) == {}
    # The earliest due time moved, so idle workers are woken to shorten their wait;
    # nothing is ready, so no sequence number is spent.
    assert await wake_len(queue) == 1
    assert await queue.client.get(queue._broker.keys.seq) is None


async def test_enqueue_due_after_the_earliest_scheduled_job_does_not_wake(
    queue: qa.Queue,
) -> None:
    await enqueue(queue, "soon", delay_ms=60_000)
    await queue.client.delete(queue._broker.keys.wake)
    await enqueue(queue, "later", delay_ms=120_000)
    assert await wake_len(queue) == 0
    await enqueue(queue, "sooner", delay_ms=30_000)
    assert await wake_len(queue) == 1


async def test_enqueue_at_wins_over_delay(queue: qa.Queue) -> None:
    at = await server_ms(queue) + 3_600_000
    await enqueue(queue, "at", delay_ms=1000, at_ms=at)
    assert (await fields(queue, "at"))["due"] == str(at)
    assert await members(queue, queue._broker.keys.scheduled) == {"at": at}


async def test_enqueue_at_in_the_past_is_ready_at_once(queue: qa.Queue) -> None:
    await enqueue(queue, "past", at_ms=await server_ms(queue) - 5000, delay_ms=60_000)
    job_hash = await fields(queue, "past")
    assert job_hash["state"] == "ready"
    assert "due" not in job_hash
    assert await ready_ids(queue) == ["past"]
    assert await members(queue, queue._broker.keys.scheduled) == {}
    assert await wake_len(queue) == 1


async def test_ready_order_is_priority_then_fifo(queue: qa.Queue) -> None:
    order = [("p5-first", 5), ("p0-first", 0), ("neg", -(2**20)), ("p5-second", 5)]
    await queue._broker.scripts.enqueue(b"".join(job(job_id, priority=p) for job_id, p in order))
    await enqueue(queue, "p0-second", priority=0)
    await enqueue(queue, "top", priority=2**20)

    ready = await members(queue, queue._broker.keys.ready)
    assert ready == {
        "p5-first": 5 * PRIORITY_SHIFT + 1,
        "neg": -(2**20) * PRIORITY_SHIFT + 2,
        "p5-second": 5 * PRIORITY_SHIFT + 3,
        "top": 2**20 * PRIORITY_SHIFT + 4,
    }
    expected = ["neg", "p0-first", "p0-second", "p5-first", "p5-second", "top"]
    assert await ready_ids(queue) == expected
    # ...and lease hands them out in that order, however many it takes per call.
    assert (await lease(queue, 1)).ids == ["neg"]
    assert (await lease(queue, 3)).ids == expected[1:4]
    assert (await lease(queue, 10)).ids == expected[4:]


async def test_enqueue_existing_id_leaves_job_untouched(queue: qa.Queue) -> None:
    await enqueue(queue, "dup", priority=1, retries=2)
    await lease(queue, 1)
    before = await fields(queue, "dup")
    active = await members(queue, queue._broker.keys.active)
    seq = await queue.client.get(queue._broker.keys.seq)

    replies = await queue._broker.scripts.enqueue(
        job("dup", task="other", payload=b"x", priority=-5, retries=9)
        + job("new")
        + job("dup", delay_ms=1000)
        + job("new", priority=4)
    )

    assert replies == [0, 1, 0, 0]
    assert await fields(queue, "dup") == before
    assert before["state"] == "active"
    assert await members(queue, queue._broker.keys.active) == active
    assert await ready_ids(queue) == ["new"]
    assert (await fields(queue, "new"))["task"] == TASK
    assert await members(queue, queue._broker.keys.scheduled) == {}
    assert await queue.client.get(queue._broker.keys.seq) == seq


async def test_enqueue_many_jobs_wakes_once(queue: qa.Queue) -> None:
    assert await enqueue(queue, *[f"j{i}" for i in range(50)]) == [1] * 50
    assert await wake_len(queue) == 1
    assert await queue.client.llen(queue._broker.keys.fifo) == 50


async def test_enqueue_chunks_lands_every_chunk_and_flattens_replies(queue: qa.Queue) -> None:
    await enqueue(queue, "old")
    flags = await queue._broker.scripts.enqueue_chunks(
        [job("a") + job("old"), job("b"), job("c", delay_ms=60_000) + job("a")]
    )
    assert flags == [1, 0, 1, 1, 0]
    assert await ready_ids(queue) == ["old", "a", "b"]
    assert set(await members(queue, queue._broker.keys.scheduled)) == {"c"}
    assert await wake_len(queue) == 1


async def test_plain_jobs_written_together_keep_the_first_of_each_id_and_their_order(
    queue: qa.Queue,
) -> None:
    """Plain jobs of priority 0 are written at the end of the call, a thousand per command:
    an id that exists (leased, or still fresh), or came earlier in the batch in any form,
    is not added, and the rest keep their order."""
    await enqueue(queue, "leased", "waiting")
    assert (await lease(queue, 1)).ids == ["leased"]
    await queue.client.delete(queue._broker.keys.wake)
    record = await queue.client.hget(queue._broker.keys.fresh, "waiting")

    replies = await queue._broker.scripts.enqueue(
        job("x")
        + job("leased", payload=b"new")
        + job("waiting", payload=b"new")
        + job("x", payload=b"second")
        + job("later", delay_ms=60_000)
        + job("later")
        + job("y")
    )

    assert replies == [1, 0, 0, 0, 1, 0, 1]
    assert await queue.client.lrange(queue._broker.keys.fifo, 0, -1) == [b"waiting", b"x", b"y"]
    assert await queue.client.hget(queue._broker.keys.fresh, "waiting") == record
    assert (await fields(queue, "x"))["payload"] == PAYLOAD.decode()
    assert (await fields(queue, "leased"))["state"] == "active"
    assert (await fields(queue, "later"))["state"] == "scheduled"
    assert await wake_len(queue) == 1


async def test_a_batch_of_existing_ids_only_changes_nothing_and_wakes_nobody(
    queue: qa.Queue,
) -> None:
    await enqueue(queue, "a", "b")
    await queue.client.delete(queue._broker.keys.wake)
    assert await enqueue(queue, "b", "a", "b") == [0, 0, 0]
    assert await queue.client.lrange(queue._broker.keys.fifo, 0, -1) == [b"a", b"b"]
    assert await wake_len(queue) == 0


async def test_plain_jobs_past_a_thousand_in_one_call_all_land_in_order(queue: qa.Queue) -> None:
    ids = [f"j{i}" for i in range(2500)]
    await enqueue(queue, "j1700")
    replies = await enqueue(queue, *ids)
    assert replies == [0 if i == 1700 else 1 for i in range(2500)]
    assert await queue.client.lrange(queue._broker.keys.fifo, 0, -1) == [
        b"j1700",
        *(i.encode() for i in ids if i != "j1700"),
    ]
    assert await queue.client.hlen(queue._broker.keys.fresh) == 2500
