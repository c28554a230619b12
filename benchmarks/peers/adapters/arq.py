"""arq, as its README shows: ``create_pool(RedisSettings)`` + ``enqueue_job``; ``Worker``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, ClassVar

from arq import Worker, create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import func

from adapters.base import Producer, Recorder, gather_chunked


class _Producer:
    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool

    async def enqueue_bulk(self, task: str, start: int, count: int) -> None:
        # arq has no bulk enqueue: each enqueue_job is one WATCH/MULTI transaction.
        await gather_chunked(
            partial(self.pool.enqueue_job, task, i) for i in range(start, start + count)
        )

    async def enqueue_stamp(self, i: int, sent: float) -> None:
        await self.pool.enqueue_job("stamp", i, sent)

    async def enqueue_noop(self, i: int) -> None:
        await self.pool.enqueue_job("noop", i)

    async def roundtrip(self, i: int, timeout: float) -> None:
        job = await self.pool.enqueue_job("noop", i)
        if job is None:
            raise RuntimeError(f"enqueue_job returned None for noop({i}) (a duplicate job id)")
        # Job.result polls every poll_delay (default 0.5 s); asyncio.TimeoutError past timeout.
        await job.result(timeout=timeout)


class ArqAdapter:
    """arq's adapter."""

    name = "arq"
    distributions = ("arq", "redis", "hiredis")
    config: ClassVar[dict[str, str]] = {
        "enqueue": "asyncio.gather of pool.enqueue_job (no bulk call), 1,000 at a time",
        "prefetch": "queue_read_limit default: max(max_jobs * 5, 100) ids per poll",
        "polling": "poll_delay default 0.5 s (ZRANGEBYSCORE poll, no blocking wait)",
        "logging": "arq.worker logger at WARNING (the arq CLI would log every job at INFO)",
        "single enqueue": "await pool.enqueue_job('noop', i) (one WATCH/MULTI transaction)",
        "result wait": "await job.result(timeout=...): polls GET + ZSCORE every poll_delay "
        "(default 0.5 s); results kept 1 h (keep_result default)",
    }

    @contextlib.asynccontextmanager
    async def producer(self, url: str) -> AsyncIterator[Producer]:
        pool = await create_pool(RedisSettings.from_dsn(url))
        try:
            yield _Producer(pool)
        finally:
            await pool.aclose()

    async def work(self, url: str, concurrency: int, recorder: Recorder, burst: bool) -> None:
        if burst:
            raise NotImplementedError("the peers run no burst scenario")
        logging.getLogger("arq").setLevel(logging.WARNING)

        async def noop(ctx: dict[str, Any], i: int) -> None:
            recorder.noop(i)

        async def io(ctx: dict[str, Any], i: int) -> None:
            await recorder.io(i)

        async def stamp(ctx: dict[str, Any], i: int, sent: float) -> None:
            recorder.stamp(i, sent)

        worker = Worker(
            functions=[func(noop, name="noop"), func(io, name="io"), func(stamp, name="stamp")],
            redis_settings=RedisSettings.from_dsn(url),
            max_jobs=concurrency,
            handle_signals=False,
        )
        await recorder.begin()
        run = asyncio.ensure_future(worker.async_run())
        done = asyncio.ensure_future(recorder.done.wait())
        await asyncio.wait([run, done], return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        if run.done():
            run.result()  # the worker died: raise its error
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        with contextlib.suppress(asyncio.CancelledError):  # close() cancels its job tasks
            await worker.close()


ADAPTER = ArqAdapter()
