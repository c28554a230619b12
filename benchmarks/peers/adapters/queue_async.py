"""queue_async, as its README shows: one ``Queue``, tasks registered with ``@queue.task``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import ClassVar

import anyio

import queue_async as qa
from adapters.base import Producer, Recorder

QUEUE = "bench"


class _Producer:
    def __init__(self, queue: qa.Queue) -> None:
        self.queue = queue

        # A web app imports its task module: the same name, a body only the worker runs.
        @queue.task(name="bench.noop")
        async def noop(i: int) -> None: ...

        self.noop = noop

    async def enqueue_bulk(self, task: str, start: int, count: int) -> None:
        name = f"bench.{task}"
        await self.queue.enqueue_many(
            [self.queue.call(name, i) for i in range(start, start + count)]
        )

    async def enqueue_stamp(self, i: int, sent: float) -> None:
        await self.queue.enqueue("bench.stamp", i, sent)

    async def enqueue_noop(self, i: int) -> None:
        await self.noop.enqueue(i)

    async def roundtrip(self, i: int, timeout: float) -> None:
        # JobTimeout is a TimeoutError.
        await (await self.noop.enqueue(i)).result(timeout=timeout)


class QueueAsyncAdapter:
    """queue_async's adapter (the library under test)."""

    name = "queue_async"
    distributions = ("queue-async", "redis", "hiredis", "orjson", "anyio")
    config: ClassVar[dict[str, str]] = {
        "enqueue": "queue.enqueue_many([queue.call(...)]) (one script call per 1,000 jobs, packed)",
        "prefetch": (
            "default (adaptive): free slots plus, while all are busy, as many jobs as finished "
            "in the last 0.1 s; at most lease_batch=100 per call"
        ),
        "polling": "no polling: an idle worker blocks on its inbox (enqueue hands it jobs)",
        "logging": "no per-job logging",
        "single enqueue": "await noop.enqueue(i) (concurrent calls in one process are coalesced "
        "into one script call)",
        "result wait": "await handle.result(timeout=...): one shared pub/sub subscription per "
        "process wakes every waiter; results kept 1 h (keep_result default)",
    }

    @contextlib.asynccontextmanager
    async def producer(self, url: str) -> AsyncIterator[Producer]:
        async with qa.Queue(url, name=QUEUE) as queue:
            yield _Producer(queue)

    async def work(self, url: str, concurrency: int, recorder: Recorder, burst: bool) -> None:
        async with qa.Queue(url, name=QUEUE) as queue:

            @queue.task(name="bench.noop")
            async def noop(i: int) -> None:
                recorder.noop(i)

            @queue.task(name="bench.io")
            async def io(i: int) -> None:
                await recorder.io(i)

            @queue.task(name="bench.stamp")
            async def stamp(i: int, sent: float) -> None:
                recorder.stamp(i, sent)

            worker = qa.Worker(queue, concurrency=concurrency)
            await recorder.begin()
            if burst:
                await worker.run(burst=True)
                return
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await recorder.done.wait()
                worker.stop()


ADAPTER = QueueAsyncAdapter()
