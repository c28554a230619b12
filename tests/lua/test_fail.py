"""fail.lua: a failed try is scheduled again, or the job goes to dead."""

from __future__ import annotations

import pytest

import queue_async as qa
from tests.lua._support import (
    DEAD_AGE_MS,
    DEAD_LEN,
    PRIORITY_SHIFT,
    enqueue,
    fields,
    lease,
    lease_one,
    make_due,
    members,
    meta,
    server_ms,
    wake_len,
)

pytestmark = pytest.mark.anyio


async def test_fail_with_delay_schedules_the_next_try(queue: qa.Queue) -> None:
    token = await lease_one(queue, "a")
    await queue.client.delete(queue._broker.keys.wake)

    before = await server_ms(queue)
    outcome = await queue._broker.scripts.fail(
        "a", token, "Traceback: boom", 5000, DEAD_AGE_MS, DEAD_LEN
    )
    after = await server_ms(queue)

    assert outcome == "retry"
    job_hash = await fields(queue, "a")
    due = int(job_hash["due"])
    assert before + 5000 <= due <= after + 5000
    assert job_hash["state"] == "scheduled"
    assert job_hash["error"] == "Traceback: boom"
    assert job_hash["attempts"] == "1"
    assert not {"token", "worker"} & job_hash.keys()
    assert await members(queue, queue._broker.keys.scheduled) == {"a": due}
    assert await members(queue, queue._broker.keys.active) == {}
    assert await members(queue, queue._broker.keys.ready) == {}
    assert await members(queue, queue._broker.keys.dead) == {}
    assert await meta(queue) == {"retried": 1}
    # The retry is now the first job due: an idle worker is woken to wait for it.
    assert await wake_len(queue) == 1


async def test_fail_with_zero_delay_returns_job_to_ready_and_wakes(queue: qa.Queue) -> None:
    await enqueue(queue, "a", priority=4)
    reply = await lease(queue, 1)
    await enqueue(queue, "b", priority=4)
    await queue.client.delete(queue._broker.keys.wake)

    assert await queue._broker.scripts.fail(
        "a", reply.token("a"), "err", 0, DEAD_AGE_MS, DEAD_LEN
    ) == ("retry")

    job_hash = await fields(queue, "a")
    assert job_hash["state"] == "ready"
    assert job_hash["error"] == "err"
    assert not {"token", "worker", "due"} & job_hash.keys()
    # Back at the end of its priority, behind the job enqueued while it ran.
    assert await members(queue, queue._broker.keys.ready) == {
        "b": 4 * PRIORITY_SHIFT + 2,
        "a": 4 * PRIORITY_SHIFT + 3,
    }
    assert await members(queue, queue._broker.keys.active) == {}
    assert await wake_len(queue) == 1
    assert await meta(queue) == {"retried": 1}


async def test_fail_with_negative_delay_moves_to_dead_and_trims(queue: qa.Queue) -> None:
    await enqueue(queue, "older", "a")
    reply = await lease(queue, 2)
    assert await queue._broker.scripts.fail(
        "older", reply.token("older"), "first", -1, DEAD_AGE_MS, 1
    ) == ("dead")
    assert set(await members(queue, queue._broker.keys.dead)) == {"older"}
    # Died a second ago (two deaths in the same millisecond would tie on score).
    await queue.client.zadd(
        queue._broker.keys.dead, {"older": await server_ms(queue) - 1000}, xx=True
    )

    before = await server_ms(queue)
    outcome = await queue._broker.scripts.fail(
        "a", reply.token("a"), "fatal: no", -1, DEAD_AGE_MS, 1
    )
    after = await server_ms(queue)

    assert outcome == "dead"
    dead = await members(queue, queue._broker.keys.dead)
    assert set(dead) == {"a"}  # the older dead job was trimmed, hash and all
    assert before <= dead["a"] <= after
    assert await queue.client.exists(queue._broker.keys.job("older")) == 0
    job_hash = await fields(queue, "a")
    assert job_hash["state"] == "dead"
    assert job_hash["error"] == "fatal: no"
    assert int(job_hash["finished"]) == dead["a"]
    assert not {"token", "due"} & job_hash.keys()
    assert await queue.client.ttl(queue._broker.keys.job("a")) == -1
    assert await members(queue, queue._broker.keys.active) == {}
    assert await meta(queue) == {"failed": 2, "dead": 2}


async def test_fail_to_dead_trims_jobs_older_than_max_age(queue: qa.Queue) -> None:
    await enqueue(queue, "ancient", "recent", "a")
    reply = await lease(queue, 3)
    for job_id in ("ancient", "recent"):
        await queue._broker.scripts.fail(
            job_id, reply.token(job_id), "x", -1, DEAD_AGE_MS, DEAD_LEN
        )
    now = await server_ms(queue)
    await queue.client.zadd(
        queue._broker.keys.dead, {"ancient": now - 120_000, "recent": now - 30_000}
    )

    await queue._broker.scripts.fail("a", reply.token("a"), "x", -1, 60_000, DEAD_LEN)

    assert set(await members(queue, queue._broker.keys.dead)) == {"recent", "a"}
    assert await queue.client.exists(queue._broker.keys.job("ancient")) == 0
    assert (await fields(queue, "recent"))["state"] == "dead"


async def test_fail_with_stale_token_returns_lost_and_changes_nothing(queue: qa.Queue) -> None:
    token = await lease_one(queue, "a")
    before = await fields(queue, "a")
    active = await members(queue, queue._broker.keys.active)

    for delay in (-1, 0, 1000):
        outcome = await queue._broker.scripts.fail(
            "a", token + "x", "e", delay, DEAD_AGE_MS, DEAD_LEN
        )
        assert outcome == "lost"
    assert (
        await queue._broker.scripts.fail("ghost", token, "e", -1, DEAD_AGE_MS, DEAD_LEN) == "lost"
    )

    assert await fields(queue, "a") == before
    assert await members(queue, queue._broker.keys.active) == active
    for key in (queue._broker.keys.ready, queue._broker.keys.scheduled, queue._broker.keys.dead):
        assert await members(queue, key) == {}
    assert await meta(queue) == {}
    assert await queue.client.exists(queue._broker.keys.job("ghost")) == 0


async def test_a_retry_due_after_the_first_scheduled_job_wakes_nobody(queue: qa.Queue) -> None:
    token = await lease_one(queue, "a")
    await queue.client.zadd(
        queue._broker.keys.scheduled, {"earlier": await server_ms(queue) + 1000}
    )
    await queue.client.delete(queue._broker.keys.wake)

    assert (
        await queue._broker.scripts.fail("a", token, "boom", 5000, DEAD_AGE_MS, DEAD_LEN) == "retry"
    )

    assert await wake_len(queue) == 0


@pytest.mark.parametrize(("delay", "outcome"), [(5000, "retry"), (0, "retry"), (-1, "dead")])
async def test_a_repeated_fail_answers_as_the_first_and_changes_nothing(
    queue: qa.Queue, delay: int, outcome: str
) -> None:
    # The reply of the first call was lost to a dropped connection; the call is sent again.
    token = await lease_one(queue, "a")
    assert (
        await queue._broker.scripts.fail("a", token, "boom", delay, DEAD_AGE_MS, DEAD_LEN)
        == outcome
    )
    first = (await fields(queue, "a"), await meta(queue))

    assert (
        await queue._broker.scripts.fail("a", token, "boom", delay, DEAD_AGE_MS, DEAD_LEN)
        == outcome
    )

    assert (await fields(queue, "a"), await meta(queue)) == first


async def test_a_fail_of_an_earlier_try_after_the_job_was_leased_again_is_not_lost(
    queue: qa.Queue,
) -> None:
    token = await lease_one(queue, "a")
    assert await queue._broker.scripts.fail("a", token, "boom", 0, DEAD_AGE_MS, DEAD_LEN) == "retry"
    second = (await lease(queue, 1, lease_id="second")).token("a")
    assert (
        await queue._broker.scripts.fail("a", second, "again", -1, DEAD_AGE_MS, DEAD_LEN) == "dead"
    )
    # The first try's call, repeated after another try finished the job: lost, nothing moves.
    assert await queue._broker.scripts.fail("a", token, "boom", 0, DEAD_AGE_MS, DEAD_LEN) == "lost"
    assert (await fields(queue, "a"))["state"] == "dead"


# -- the retrying set: the scheduled jobs that wait out a retry's backoff ---------------------


async def test_a_retry_scheduled_for_later_joins_the_retrying_set_with_its_due_time(
    queue: qa.Queue,
) -> None:
    token = await lease_one(queue, "a")
    await enqueue(queue, "later", delay_ms=60_000)

    assert await queue._broker.scripts.fail("a", token, "boom", 5000, DEAD_AGE_MS, DEAD_LEN) == (
        "retry"
    )

    keys = queue._broker.keys
    due = int((await fields(queue, "a"))["due"])
    assert await members(queue, keys.retrying) == {"a": due}
    # A job delayed by its producer is scheduled but not retrying.
    assert set(await members(queue, keys.scheduled)) == {"a", "later"}


async def test_a_retry_at_once_or_to_dead_is_not_retrying(queue: qa.Queue) -> None:
    await enqueue(queue, "now", "dead")
    reply = await lease(queue, 2)
    scripts = queue._broker.scripts
    assert await scripts.fail("now", reply.token("now"), "e", 0, DEAD_AGE_MS, DEAD_LEN) == "retry"
    assert await scripts.fail("dead", reply.token("dead"), "e", -1, DEAD_AGE_MS, DEAD_LEN) == (
        "dead"
    )

    assert await queue.client.exists(queue._broker.keys.retrying) == 0


async def test_a_promoted_retry_leaves_the_retrying_set(queue: qa.Queue) -> None:
    token = await lease_one(queue, "a")
    await queue._broker.scripts.fail("a", token, "boom", 5000, DEAD_AGE_MS, DEAD_LEN)
    await make_due(queue, "a")

    _, promoted = await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN)

    assert promoted == 1
    assert await queue.client.exists(queue._broker.keys.retrying) == 0
    assert (await fields(queue, "a"))["state"] == "ready"


async def test_a_retry_leased_when_due_leaves_the_retrying_set(queue: qa.Queue) -> None:
    token = await lease_one(queue, "a")
    await queue._broker.scripts.fail("a", token, "boom", 5000, DEAD_AGE_MS, DEAD_LEN)
    await make_due(queue, "a")

    assert (await lease(queue, 1, lease_id="second")).ids == ["a"]

    assert await queue.client.exists(queue._broker.keys.retrying) == 0


async def test_a_cancelled_retry_leaves_the_retrying_set(queue: qa.Queue) -> None:
    token = await lease_one(queue, "a")
    await queue._broker.scripts.fail("a", token, "boom", 5000, DEAD_AGE_MS, DEAD_LEN)

    assert await queue.cancel("a")

    keys = queue._broker.keys
    assert await queue.client.exists(keys.retrying, keys.scheduled) == 0
