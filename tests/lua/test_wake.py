"""The wake list idle workers block on holds one marker at most, whatever writes to it."""

from __future__ import annotations

import pytest

import queue_async as qa
from tests.lua._support import (
    DEAD_AGE_MS,
    DEAD_LEN,
    enqueue,
    expire_leases,
    lease,
    make_due,
    wake_len,
)

pytestmark = pytest.mark.anyio


async def test_wake_list_never_holds_more_than_one_marker(queue: qa.Queue) -> None:
    async def check() -> None:
        assert await wake_len(queue) <= 1
        assert await queue.client.lrange(queue._broker.keys.wake, 0, -1) in ([], [b"1"])

    for n in range(5):
        await enqueue(queue, f"e{n}", f"f{n}")
        await check()
    assert await wake_len(queue) == 1
    await queue._broker.scripts.enqueue_chunks([b""])
    await check()

    reply = await lease(queue, 4)
    await check()
    for job_id in reply.ids[:2]:
        await queue._broker.scripts.fail(job_id, reply.token(job_id), "e", 0, DEAD_AGE_MS, DEAD_LEN)
        await check()
    await queue._broker.scripts.release([x for j in reply.jobs[2:] for x in (j.id, j.token)])
    await check()

    reply = await lease(queue, 3)
    await expire_leases(queue, *reply.ids)
    await enqueue(queue, "later", delay_ms=60_000)
    await make_due(queue, "later")
    await queue._broker.scripts.recover(3, DEAD_AGE_MS, DEAD_LEN)
    await check()
    for _ in range(3):
        await lease(queue, 1)
        await check()

    # An idle worker takes the marker; the next write puts exactly one back.
    assert await queue.client.lpop(queue._broker.keys.wake) == b"1"
    await enqueue(queue, "x", "y", "z")
    assert await wake_len(queue) == 1
