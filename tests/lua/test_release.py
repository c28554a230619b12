"""release.lua: hand leased jobs back to ready at once (worker shutdown)."""

from __future__ import annotations

import pytest

import queue_async as qa
from tests.lua._support import (
    PRIORITY_SHIFT,
    enqueue,
    fields,
    lease,
    members,
    meta,
    ready_ids,
    wake_len,
)

pytestmark = pytest.mark.anyio


async def test_release_hands_back_without_counting_attempt(queue: qa.Queue) -> None:
    await enqueue(queue, "a", "b", priority=7)
    reply = await lease(queue, 2)
    await queue.client.delete(queue._broker.keys.wake)

    released = await queue._broker.scripts.release(["a", reply.token("a"), "b", reply.token("b")])

    assert released == 2
    ready = await members(queue, queue._broker.keys.ready)
    assert set(ready) == {"a", "b"}
    assert ready["a"] < ready["b"]
    assert {score // PRIORITY_SHIFT for score in ready.values()} == {7}
    assert await members(queue, queue._broker.keys.active) == {}
    for job_id in ("a", "b"):
        job_hash = await fields(queue, job_id)
        assert job_hash["state"] == "ready"
        assert job_hash["attempts"] == "0"
        assert not {"token", "worker"} & job_hash.keys()
    assert await wake_len(queue) == 1
    assert await meta(queue) == {}

    again = await lease(queue, 2, lease_id="next")
    assert again.ids == ["a", "b"]
    assert [j.attempts for j in again.jobs] == [1, 1]


async def test_release_skips_jobs_whose_token_is_not_current(queue: qa.Queue) -> None:
    await enqueue(queue, "a", "b")
    reply = await lease(queue, 2)
    await queue.client.delete(queue._broker.keys.wake)
    before = await fields(queue, "b")

    released = await queue._broker.scripts.release(
        ["a", reply.token("a"), "b", "stale:1", "ghost", reply.token("b")]
    )

    assert released == 1
    assert set(await members(queue, queue._broker.keys.active)) == {"b"}
    assert await ready_ids(queue) == ["a"]
    assert await fields(queue, "b") == before
    assert await queue.client.exists(queue._broker.keys.job("ghost")) == 0


async def test_release_of_nothing_current_does_not_wake(queue: qa.Queue) -> None:
    await enqueue(queue, "a")
    await lease(queue, 1)
    await queue.client.delete(queue._broker.keys.wake)
    assert await queue._broker.scripts.release(["a", "wrong"]) == 0
    assert await queue._broker.scripts.release([]) == 0
    assert await wake_len(queue) == 0
