"""saq, as its README shows: ``Queue.from_url`` + ``queue.enqueue``; ``Worker(queue, ...)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, ClassVar

from saq import Queue, Status, Worker
from saq.types import Context

from adapters.base import Producer, Recorder, gather_chunked


class _Producer:
    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    async def enqueue_bulk(self, task: str, start: int, count: int) -> None:
        # saq has no bulk enqueue (Queue.map is a gather of enqueue that also waits for the
        # results); its queue caps concurrent enqueues at max_concurrent_ops=20 itself.
        await gather_chunked(
            partial(self.queue.enqueue, task, i=i) for i in range(start, start + count)
        )

    async def enqueue_stamp(self, i: int, sent: float) -> None:
        await self.queue.enqueue("stamp", i=i, sent=sent)

    async def enqueue_noop(self, i: int) -> None:
        await self.queue.enqueue("noop", i=i)

    async def roundtrip(self, i: int, timeout: float) -> None:
        # The README's "wait for the job to complete": refresh(until_complete) listens on the
        # queue's one pub/sub multiplexer (Queue.apply instead polls every 0.5 s).
        job = await self.queue.enqueue("noop", i=i)
        if job is None:
            raise RuntimeError(f"enqueue returned None for noop({i}) (a duplicate job key)")
        await job.refresh(until_complete=timeout)  # asyncio.TimeoutError past timeout
        if job.status != Status.COMPLETE:
            raise RuntimeError(f"noop({i}) ended {job.status}: {job.error}")


class SaqAdapter:
    """saq's adapter."""

    name = "saq"
    distributions = ("saq", "redis", "hiredis")
    config: ClassVar[dict[str, str]] = {
        "enqueue": "asyncio.gather of queue.enqueue (no bulk call), 1,000 at a time "
        "(saq itself caps in-flight enqueues at max_concurrent_ops=20)",
        "prefetch": "none: each of the `concurrency` tasks BLMOVEs one job at a time",
        "polling": "dequeue_timeout default 0 (BLMOVE blocks, no polling)",
        "logging": "saq logger at WARNING (the saq CLI's default is ERROR)",
        "single enqueue": "await queue.enqueue('noop', i=i) (an enqueue script; at most "
        "max_concurrent_ops=20 queue operations in flight per Queue, the default)",
        "result wait": "job = await queue.enqueue(...); await job.refresh(until_complete=...): "
        "the queue's one pub/sub multiplexer; job reads also under max_concurrent_ops",
    }

    @contextlib.asynccontextmanager
    async def producer(self, url: str) -> AsyncIterator[Producer]:
        queue = Queue.from_url(url)
        await queue.connect()
        try:
            yield _Producer(queue)
        finally:
            await queue.disconnect()

    async def work(self, url: str, concurrency: int, recorder: Recorder, burst: bool) -> None:
        if burst:
            raise NotImplementedError("the peers run no burst scenario")
        logging.getLogger("saq").setLevel(logging.WARNING)

        async def noop(ctx: dict[str, Any], *, i: int) -> None:
            recorder.noop(i)

        async def io(ctx: dict[str, Any], *, i: int) -> None:
            await recorder.io(i)

        async def stamp(ctx: dict[str, Any], *, i: int, sent: float) -> None:
            recorder.stamp(i, sent)

        queue = Queue.from_url(url)
        functions: list[tuple[str, Callable[..., Any]]] = [
            ("noop", noop),
            ("io", io),
            ("stamp", stamp),
        ]
        worker: Worker[Context] = Worker(
            queue,
            functions=functions,
            concurrency=concurrency,
        )
        await queue.connect()
        try:
            await recorder.begin()
            run = asyncio.ensure_future(worker.start())
            done = asyncio.ensure_future(recorder.done.wait())
            await asyncio.wait([run, done], return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
            await worker.stop()
            await run
        finally:
            await queue.disconnect()


ADAPTER = SaqAdapter()
