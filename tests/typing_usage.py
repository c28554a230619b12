"""The typing contract of the public API: mypy --strict must accept this file as it is.

Not a test module (pytest does not collect it); `nox -s typecheck` checks it.
"""

from __future__ import annotations

from typing import Any, assert_type

import queue_async as qa

queue = qa.Queue("redis://localhost:6379/0", name="typing")


@queue.task(retries=3, timeout=30)
async def add(ctx: qa.JobContext, a: int, b: int) -> int:
    return a + b


@queue.task
async def no_context(name: str) -> str:
    return name


@queue.task
def blocking(path: str, *, size: int = 10) -> bytes:
    return path.encode() * size


async def usage() -> None:
    handle = await add.enqueue(1, 2)
    assert_type(handle, qa.JobHandle[int])
    assert_type(await handle.result(timeout=10), int)
    assert_type(await no_context.enqueue("x"), qa.JobHandle[str])
    assert_type(await blocking.enqueue("p", size=2), qa.JobHandle[bytes])
    delayed = await add.options(delay=5, priority=1, job_id="x").enqueue(1, 2)
    assert_type(delayed, qa.JobHandle[int])
    spec = add.call(3, 4)
    assert_type(spec, qa.JobSpec[int])
    handles = await queue.enqueue_many([spec, add.call(5, 6)])
    assert_type(handles, list[qa.JobHandle[Any]])
    assert_type(await handle.info(), qa.Job)
    assert_type(await handle.cancel(), bool)
    assert_type(await queue.enqueue("typing.add", 1, 2), qa.JobHandle[Any])
    async with qa.Worker(queue, concurrency=10):
        pass
    await qa.Worker(queue).run(burst=True)
    durable = qa.Queue(durability=qa.Durability(replicas=1, timeout=0.5, local_fsync=False))
    try:
        await durable.enqueue("typing.add", 1, 2)
    except qa.NotReplicated as exc:
        assert_type(exc.replicas, int)
        await durable.enqueue_many(exc.remaining)

    # What a type checker must refuse:
    await add.enqueue("1", 2)  # type: ignore[arg-type]
    await add.enqueue(1)  # type: ignore[call-arg]
    await no_context.enqueue(name=3)  # type: ignore[arg-type]
