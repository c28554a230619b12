"""extend.lua: a worker's heartbeat extends its current leases and records the worker."""

from __future__ import annotations

import pytest

import queue_async as qa
from tests.lua._support import enqueue, fields, lease, members, server_ms

pytestmark = pytest.mark.anyio


async def test_extend_reports_lost_tokens_and_writes_heartbeat(queue: qa.Queue) -> None:
    await enqueue(queue, "mine", "taken")
    reply = await lease(queue, 2, lease_ms=1000, worker_id="w1")
    old_deadline = (await members(queue, queue._broker.keys.active))["taken"]

    before = await server_ms(queue)
    lost, aborting = await queue._broker.scripts.extend(
        60_000,
        "w1",
        b'{"id": "w1"}',
        30_000,
        ["mine", reply.token("mine"), "taken", "stale:9", "ghost", reply.token("mine")],
    )
    after = await server_ms(queue)

    assert lost == ["taken", "ghost"]
    assert aborting == []
    active = await members(queue, queue._broker.keys.active)
    assert before + 60_000 <= active["mine"] <= after + 60_000
    assert active["taken"] == old_deadline
    assert "ghost" not in active
    assert await queue.client.exists(queue._broker.keys.job("ghost")) == 0
    assert (await fields(queue, "mine"))["token"] == reply.token("mine")

    worker_key = queue._broker.keys.worker("w1")
    assert await queue.client.get(worker_key) == b'{"id": "w1"}'
    assert 25_000 < await queue.client.pttl(worker_key) <= 30_000
    workers = await members(queue, queue._broker.keys.workers)
    assert set(workers) == {"w1"}
    assert before <= workers["w1"] <= after


async def test_extend_forgets_workers_silent_longer_than_the_ttl(queue: qa.Queue) -> None:
    now = await server_ms(queue)
    await queue.client.zadd(queue._broker.keys.workers, {"gone": now - 60_000, "alive": now - 1000})
    assert await queue._broker.scripts.extend(30_000, "w2", b"{}", 10_000, []) == ([], [])
    assert set(await members(queue, queue._broker.keys.workers)) == {"alive", "w2"}


async def test_extend_does_not_put_back_a_job_missing_from_active(queue: qa.Queue) -> None:
    await enqueue(queue, "a")
    reply = await lease(queue, 1)
    await queue.client.zrem(queue._broker.keys.active, "a")
    assert await queue._broker.scripts.extend(
        30_000, "w", b"{}", 10_000, ["a", reply.token("a")]
    ) == (
        [],
        [],
    )
    assert await members(queue, queue._broker.keys.active) == {}


async def test_extend_after_complete_reports_the_job_lost(queue: qa.Queue) -> None:
    await enqueue(queue, "a")
    reply = await lease(queue, 1)
    await queue._broker.scripts.complete(["a", reply.token("a"), b"r", 60_000])
    assert await queue._broker.scripts.extend(
        30_000, "w", b"{}", 10_000, ["a", reply.token("a")]
    ) == (
        ["a"],
        [],
    )
    assert await members(queue, queue._broker.keys.active) == {}


async def test_extend_reports_jobs_flagged_for_abort_and_still_extends_them(
    queue: qa.Queue,
) -> None:
    await enqueue(queue, "a", "b")
    reply = await lease(queue, 2, lease_ms=1000)
    assert await queue._broker.scripts.cancel("b", 60_000, abort=True) == "active"
    pairs = ["a", reply.token("a"), "b", reply.token("b")]
    assert await queue._broker.scripts.extend(60_000, "w", b"{}", 10_000, pairs) == ([], ["b"])
    assert set(await members(queue, queue._broker.keys.active)) == {"a", "b"}
