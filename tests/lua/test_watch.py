"""watch.lua, and the announcement every finishing script makes to watched jobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import queue_async as qa
from queue_async.broker import wire
from queue_async.broker.scripts import Arg
from tests.lua._support import (
    DEAD_AGE_MS,
    DEAD_LEN,
    TASK,
    enqueue,
    expire_leases,
    lease,
)

pytestmark = pytest.mark.anyio

SENTINEL = b"sentinel"


async def test_watch_missing_job_returns_none_and_creates_no_key(queue: qa.Queue) -> None:
    assert await queue._broker.scripts.watch("ghost") is None
    assert await queue.client.keys(f"{queue._broker.keys.prefix}*") == []


async def _subscribe(pubsub: Any, channel: str) -> None:
    """Subscribe, and wait for the server's confirmation."""
    await pubsub.subscribe(channel)
    with anyio.fail_after(5):
        while (await pubsub.get_message(timeout=1)) is None:
            pass


def _watched(queue: qa.Queue) -> str:
    return f"{queue._broker.keys.prefix}watched"


async def test_watch_flags_job_and_returns_its_state(queue: qa.Queue) -> None:
    await enqueue(queue, "a")
    assert await queue._broker.scripts.watch("a") == "ready"
    # Flagged in the watched hash: the job stays a fresh record, which lease reads cheaply.
    assert await queue.client.hexists(queue._broker.keys.fresh, "a") == 1
    assert not await queue.client.exists(queue._broker.keys.job("a"))
    assert await queue.client.hgetall(_watched(queue)) == {b"a": b"1"}
    reply = await lease(queue, 1)
    assert [(j.id, j.task, j.attempts) for j in reply.jobs] == [("a", TASK, 1)]
    assert await queue._broker.scripts.watch("a") == "active"
    await queue._broker.scripts.complete(["a", reply.token("a"), b"r", 60_000])
    # The announcement takes the flag away with it.
    assert not await queue.client.exists(_watched(queue))


async def test_watch_of_a_finished_job_flags_nothing(queue: qa.Queue) -> None:
    await enqueue(queue, "a")
    await _finish_done(queue)
    assert await queue._broker.scripts.watch("a") == "done"
    assert not await queue.client.exists(_watched(queue))


async def test_deleting_a_watched_fresh_job_announces_it(queue: qa.Queue) -> None:
    await enqueue(queue, "a")
    channel = queue._broker.keys.done_channel
    async with queue.client.pubsub() as pubsub:
        await _subscribe(pubsub, channel)
        assert await queue._broker.scripts.watch("a") == "ready"
        assert (await queue._broker.scripts.delete("ready", "", 10, 10, "", "", ["a"]))[0] == 1
        with anyio.fail_after(5):
            while (message := await pubsub.get_message(True, timeout=1)) is None:
                pass
    assert message["data"] == b"a"
    assert not await queue.client.exists(_watched(queue))


async def test_watch_keeps_the_record_ttl(queue: qa.Queue) -> None:
    await enqueue(queue, "a")
    reply = await lease(queue, 1)
    await queue._broker.scripts.complete(["a", reply.token("a"), b"r", 60_000])
    assert await queue._broker.scripts.watch("a") == "done"
    assert 55_000 < await queue.client.pttl(queue._broker.keys.job("a")) <= 60_000


async def _finish_done(queue: qa.Queue) -> None:
    reply = await lease(queue, 1)
    await queue._broker.scripts.complete(["a", reply.token("a"), b"r", 60_000])


async def _finish_dead(queue: qa.Queue) -> None:
    reply = await lease(queue, 1)
    await queue._broker.scripts.fail("a", reply.token("a"), "e", -1, DEAD_AGE_MS, DEAD_LEN)


async def _finish_stalled(queue: qa.Queue) -> None:
    await lease(queue, 1)
    await expire_leases(queue, "a")
    await queue._broker.scripts.recover(0, DEAD_AGE_MS, DEAD_LEN)


async def _finish_cancelled(queue: qa.Queue) -> None:
    await queue._broker.scripts.cancel("a", 60_000)


FINISHES: dict[str, tuple[Callable[[qa.Queue], Awaitable[None]], bytes]] = {
    "complete": (_finish_done, b"done"),
    "fail": (_finish_dead, b"dead"),
    "stall": (_finish_stalled, b"dead"),
    "cancel": (_finish_cancelled, b"cancelled"),
}


async def _first_message(queue: qa.Queue, watched: bool, finish: str) -> bytes:
    """Subscribe to the queue's done channel, finish the job, then publish a sentinel: the
    first message is the announcement (the job's id) if there was one, else the sentinel."""
    channel = queue._broker.keys.done_channel
    await enqueue(queue, "a")
    async with queue.client.pubsub() as pubsub:
        await _subscribe(pubsub, channel)
        if watched:
            assert await queue._broker.scripts.watch("a") == "ready"
        await FINISHES[finish][0](queue)
        await queue.client.publish(channel, SENTINEL)
        with anyio.fail_after(5):
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    data: bytes = message["data"]
                    return data


@pytest.mark.parametrize("finish", list(FINISHES))
async def test_watched_job_announces_its_final_state(queue: qa.Queue, finish: str) -> None:
    assert await _first_message(queue, watched=True, finish=finish) == b"a"
    # The announcement comes after the final state is written, in the same script.
    assert await queue.client.hget(queue._broker.keys.job("a"), "state") == FINISHES[finish][1]


@pytest.mark.parametrize("finish", list(FINISHES))
async def test_unwatched_job_publishes_nothing(queue: qa.Queue, finish: str) -> None:
    assert await _first_message(queue, watched=False, finish=finish) == SENTINEL


async def test_one_complete_call_announces_all_its_watched_jobs_in_one_ended_message(
    queue: qa.Queue,
) -> None:
    """The ended channel: one message per call, id, task and result per watched job; the
    result only when kept and short enough (else "" and "": the waiter reads the job)."""
    channel = queue._broker.keys.ended_channel
    await enqueue(queue, "a", "b", "c", "d")
    async with queue.client.pubsub() as pubsub:
        await _subscribe(pubsub, channel)
        assert await queue._broker.scripts.watch_many(["a", "b", "c"]) == ["ready"] * 3
        reply = await lease(queue, 4)
        long = b"x" * (wire.CARRIED_RESULT_MAX + 1)
        completions: list[Arg] = []
        for job_id, result, keep in [("a", b"1", 60_000), ("b", long, 60_000), ("c", b"3", 0)]:
            completions += [job_id, reply.token(job_id), result, keep]
        completions += ["d", reply.token("d"), b"4", 60_000]  # not watched
        assert await queue._broker.scripts.complete(completions) == [1, 1, 1, 1]
        await queue.client.publish(channel, SENTINEL)
        messages = []
        with anyio.fail_after(5):
            while not messages or messages[-1] != SENTINEL:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    messages.append(message["data"])
    assert len(messages) == 2
    assert wire.unpack_fields(messages[0]) == [
        *(b"a", TASK.encode(), b"1"),
        *(b"b", b"", b""),
        *(b"c", b"", b""),
    ]
