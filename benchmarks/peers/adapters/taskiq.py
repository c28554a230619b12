"""taskiq with taskiq-redis, as its README shows: ``RedisStreamBroker`` with a
``RedisAsyncResultBackend``, ``@broker.task``, ``task.kiq(...)``; the worker is the receiver
the ``taskiq worker`` command runs, started and stopped the way that command does, in one
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from taskiq.exceptions import TaskiqResultTimeoutError
from taskiq.receiver import Receiver
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from adapters.base import Producer, Recorder, gather_chunked

# The README strongly recommends an expiry on results; one hour, like arq's keep_result.
RESULT_EX_TIME = 3600


@dataclass
class _App:
    broker: RedisStreamBroker
    tasks: dict[str, Any]


def _app(url: str, recorder: Recorder | None) -> _App:
    """The broker and its tasks, as the producer and the worker process both define them."""
    backend: RedisAsyncResultBackend[Any] = RedisAsyncResultBackend(
        redis_url=url, result_ex_time=RESULT_EX_TIME
    )
    broker = RedisStreamBroker(url=url).with_result_backend(backend)
    rec = recorder or Recorder(expect=None)

    @broker.task(task_name="noop")
    async def noop(i: int) -> None:
        rec.noop(i)

    @broker.task(task_name="io")
    async def io(i: int) -> None:
        await rec.io(i)

    @broker.task(task_name="stamp")
    async def stamp(i: int, sent: float) -> None:
        rec.stamp(i, sent)

    return _App(broker, {"noop": noop, "io": io, "stamp": stamp})


class _Producer:
    def __init__(self, app: _App) -> None:
        self.app = app

    async def enqueue_bulk(self, task: str, start: int, count: int) -> None:
        # taskiq has no bulk kick: a gather of kiq (one XADD each).
        registered = self.app.tasks[task]
        await gather_chunked(partial(registered.kiq, i) for i in range(start, start + count))

    async def enqueue_stamp(self, i: int, sent: float) -> None:
        await self.app.tasks["stamp"].kiq(i, sent)

    async def enqueue_noop(self, i: int) -> None:
        await self.app.tasks["noop"].kiq(i)

    async def roundtrip(self, i: int, timeout: float) -> None:
        task = await self.app.tasks["noop"].kiq(i)
        # wait_result polls the result backend every check_interval (default 0.2 s).
        try:
            result = await task.wait_result(timeout=timeout)
        except TaskiqResultTimeoutError as exc:
            raise TimeoutError(f"no result for noop({i}) after {timeout}s") from exc
        if result.is_err:
            raise RuntimeError(f"noop({i}) failed: {result.error!r}")


class TaskiqAdapter:
    """taskiq's adapter."""

    name = "taskiq"
    distributions = ("taskiq", "taskiq-redis", "redis", "hiredis")
    config: ClassVar[dict[str, str]] = {
        "enqueue": "asyncio.gather of task.kiq (no bulk call), 1,000 at a time",
        "prefetch": "max_prefetch default 0; XREADGROUP count default 100",
        "polling": "XREADGROUP BLOCK 2000 ms (xread_block default), no polling",
        "logging": "taskiq logger at WARNING (the taskiq worker command logs every task at INFO)",
        "results": f"RedisAsyncResultBackend(result_ex_time={RESULT_EX_TIME}), as in the README",
        "single enqueue": "await noop.kiq(i) (one XADD)",
        "result wait": "await (await noop.kiq(i)).wait_result(timeout=...): polls the result "
        "backend (EXISTS, then GET) every check_interval (default 0.2 s)",
    }

    @contextlib.asynccontextmanager
    async def producer(self, url: str) -> AsyncIterator[Producer]:
        app = _app(url, None)
        # startup() declares the stream's consumer group before anything is added to it.
        await app.broker.startup()
        try:
            yield _Producer(app)
        finally:
            await app.broker.shutdown()

    async def work(self, url: str, concurrency: int, recorder: Recorder, burst: bool) -> None:
        if burst:
            raise NotImplementedError("the peers run no burst scenario")
        logging.getLogger("taskiq").setLevel(logging.WARNING)
        app = _app(url, recorder)
        app.broker.is_worker_process = True
        stop = asyncio.Event()
        with ThreadPoolExecutor() as executor:
            receiver = Receiver(broker=app.broker, executor=executor, max_async_tasks=concurrency)
            await recorder.begin()
            run = asyncio.ensure_future(receiver.listen(stop))
            done = asyncio.ensure_future(recorder.done.wait())
            await asyncio.wait([run, done], return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
            stop.set()  # what the command's SIGINT/SIGTERM handler does
            try:
                await run
            finally:
                await app.broker.shutdown()


ADAPTER = TaskiqAdapter()
