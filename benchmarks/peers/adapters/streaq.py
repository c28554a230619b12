"""streaq, as its README shows: one ``Worker`` with ``@worker.task``; ``task.enqueue(...)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from streaq import Worker

from adapters.base import Producer, Recorder


@dataclass
class _App:
    worker: Worker[Any]
    tasks: dict[str, Any]


def _app(url: str, concurrency: int, recorder: Recorder | None) -> _App:
    """The worker and its tasks, as the producer and the worker process both define them.

    ``silent=True`` is streaq's switch for per-task logs.
    """
    # Unset (the default user's setup) unless $STREAQ_MAX_CONNECTIONS asks for a bigger
    # coredis pool than its 64 connections, for a one-off look at what the pool limits.
    pool = os.environ.get("STREAQ_MAX_CONNECTIONS")
    worker: Worker[Any] = Worker(
        redis_url=url,
        concurrency=concurrency,
        redis_kwargs={"max_connections": int(pool)} if pool else None,
    )
    rec = recorder or Recorder(expect=None)

    @worker.task(name="noop", silent=True)
    async def noop(i: int) -> None:
        rec.noop(i)

    @worker.task(name="io", silent=True)
    async def io(i: int) -> None:
        await rec.io(i)

    @worker.task(name="stamp", silent=True)
    async def stamp(i: int, sent: float) -> None:
        rec.stamp(i, sent)

    return _App(worker, {"noop": noop, "io": io, "stamp": stamp})


class _Producer:
    def __init__(self, app: _App) -> None:
        self.app = app

    async def enqueue_bulk(self, task: str, start: int, count: int) -> None:
        registered = self.app.tasks[task]
        # Worker.enqueue_many: one pipeline for the whole batch (the README's bulk path).
        await self.app.worker.enqueue_many(
            [registered.enqueue(i) for i in range(start, start + count)]
        )

    async def enqueue_stamp(self, i: int, sent: float) -> None:
        await self.app.tasks["stamp"].enqueue(i, sent)

    async def enqueue_noop(self, i: int) -> None:
        await self.app.tasks["noop"].enqueue(i)

    async def roundtrip(self, i: int, timeout: float) -> None:
        task = await self.app.tasks["noop"].enqueue(i)
        # Worker.result_by_id: a pub/sub subscription of its own per waiting call, under
        # anyio.fail_after (TimeoutError past timeout).
        result = await task.result(timeout=timedelta(seconds=timeout))
        if not result.success:
            raise RuntimeError(f"noop({i}) failed: {result.exception!r}")


class StreaqAdapter:
    """streaq's adapter."""

    name = "streaq"
    distributions = ("streaq", "coredis", "anyio")
    config: ClassVar[dict[str, str]] = {
        "enqueue": "worker.enqueue_many([task.enqueue(i) ...]) (one pipeline per batch)",
        "prefetch": "prefetch default: concurrency (buffer = 2 x concurrency)",
        "polling": "XREADGROUP BLOCK (idle_timeout 60 s), no polling",
        "logging": "tasks registered with silent=True (streaq's per-task log switch)",
        "single enqueue": "await noop.enqueue(i) (a Task, awaited: one enqueue script call)",
        "result wait": "await (await noop.enqueue(i)).result(timeout=...): each waiting call "
        "opens its own pub/sub subscription, then GETs the result",
    }

    @contextlib.asynccontextmanager
    async def producer(self, url: str) -> AsyncIterator[Producer]:
        app = _app(url, 16, None)
        async with app.worker:
            yield _Producer(app)

    async def work(self, url: str, concurrency: int, recorder: Recorder, burst: bool) -> None:
        if burst:
            raise NotImplementedError("the peers run no burst scenario")
        logging.getLogger("streaq").setLevel(logging.WARNING)
        app = _app(url, concurrency, recorder)
        await recorder.begin()
        run = asyncio.ensure_future(app.worker.run_async())
        done = asyncio.ensure_future(recorder.done.wait())
        await asyncio.wait([run, done], return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        if run.done():
            run.result()  # the worker died: raise its error
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


ADAPTER = StreaqAdapter()
