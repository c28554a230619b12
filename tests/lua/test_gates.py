"""pause.lua, resume.lua and set_limits.lua: one script per flow-control transition
(tests/test_flow_control.py runs them under workers)."""

from __future__ import annotations

import pytest

import queue_async as qa
from queue_async.broker.scripts import SCRIPTS
from tests.lua._support import TASK, enqueue, lease, ready_ids, wake_len

pytestmark = pytest.mark.anyio


async def _pause(queue: qa.Queue, task: str) -> int:
    reply: int = await queue._broker.scripts._call(
        SCRIPTS["pause"], [queue._broker.keys.gates], [task]
    )
    return reply


async def test_pause_replies_whether_this_call_paused(queue: qa.Queue) -> None:
    assert await _pause(queue, "") == 1
    assert await _pause(queue, "") == 0
    assert await _pause(queue, TASK) == 1
    gates = await queue.client.hgetall(queue._broker.keys.gates)
    assert gates == {b"paused": b"1", f"pause:{TASK}".encode(): b"1"}


async def test_resume_of_the_queue_wakes_idle_workers_only_if_it_was_paused(
    queue: qa.Queue,
) -> None:
    assert await queue._broker.scripts.resume("") == 0
    assert await wake_len(queue) == 0
    await queue._broker.scripts.pause("")
    assert await queue._broker.scripts.resume("") == 1
    assert await wake_len(queue) == 1


async def test_resume_of_a_task_lets_its_held_jobs_go_in_order(queue: qa.Queue) -> None:
    await queue._broker.scripts.pause(TASK)
    await enqueue(queue, "a", "b", "c")
    assert (await lease(queue, 10)).ids == []  # each one met and held
    assert await queue._broker.scripts.resume(TASK) == 3
    assert await ready_ids(queue) == ["a", "b", "c"]
    assert await queue.client.hget(queue._broker.keys.gates, f"pause:{TASK}") is None


async def test_set_limits_stores_them_and_clearing_lets_held_jobs_go(queue: qa.Queue) -> None:
    scripts = queue._broker.scripts
    assert await scripts.set_limits(TASK, "1", "5:1000") == 0
    gates = await queue.client.hgetall(queue._broker.keys.gates)
    assert gates == {f"limit:{TASK}".encode(): b"1", f"rate:{TASK}".encode(): b"5:1000"}
    await enqueue(queue, "a", "b")
    assert (await lease(queue, 10)).ids == ["a"]  # b is held by the concurrency limit
    assert await scripts.set_limits(TASK, "", "") == 1
    assert await ready_ids(queue) == ["b"]
    assert await queue.client.hgetall(queue._broker.keys.gates) == {}
