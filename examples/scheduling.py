"""Scheduling and flow control: cron, a concurrency limit, a rate limit, pause and resume,
unique jobs and progress check-ins, with two worker queues in one worker.

    python examples/scheduling.py

Uses $REDIS_URL if set; otherwise starts a private embedded Valkey server and stops it after.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack

import anyio

import queue_async as qa
from queue_async.embedded import EmbeddedServer


async def main(url: str) -> None:
    default = qa.Queue(url, name="example-default")
    bulk = qa.Queue(url, name="example-bulk")
    began = time.monotonic()

    def stamp() -> str:
        return f"{time.monotonic() - began:5.2f}s"

    @default.cron("* * * * * *", name="heartbeat")  # every second, once across all workers
    async def heartbeat(ctx: qa.JobContext) -> None:
        print(f"  {stamp()} cron tick {ctx.job_id}")

    @default.task(max_concurrency=2)
    async def export(ctx: qa.JobContext, report: int) -> None:
        for step in range(3):
            await ctx.checkin(f"report {report}: step {step + 1} of 3", progress=(step + 1) / 3)
            await anyio.sleep(0.1)
        print(f"  {stamp()} exported report {report} (at most two at a time)")

    notified = []
    all_notified = anyio.Event()

    @bulk.task(rate_limit="5/s")
    async def notify(user: int) -> None:
        print(f"  {stamp()} notified user {user} (five per second)")
        notified.append(user)
        if len(notified) == 8:
            all_notified.set()

    exports = await default.enqueue_many([export.call(n) for n in range(4)])
    await bulk.enqueue_many([notify.call(n) for n in range(8)])
    first = await export.options(unique=True).enqueue(99)
    again = await export.options(unique=True).enqueue(99)
    print(f"unique job enqueued twice -> the same job: {first == again}")

    await bulk.pause()
    print("bulk queue paused: its jobs wait while the default queue runs")
    worker = qa.Worker([default, bulk], strategy="weighted", weights=[3, 1], concurrency=20)
    async with worker:
        await anyio.sleep(0.15)
        info = await exports[0].info()
        print(f"  {stamp()} export 0 says: {info.checkin!r}, progress {info.progress}")
        for handle in exports:
            await handle.result(timeout=10)
        print(f"  {stamp()} resuming the bulk queue")
        await bulk.resume()
        with anyio.fail_after(10):
            await all_notified.wait()
        await anyio.sleep(1.2)  # let the cron tick once more
    for queue in (default, bulk):
        stats = await queue.stats()
        print(f"{queue.name}: processed {stats.processed}, held {stats.held}")
        keys = [key async for key in queue.client.scan_iter(match=f"{queue.key_prefix}*")]
        if keys:
            await queue.client.delete(*keys)
        await queue.close()


if __name__ == "__main__":
    with ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            redis_url = stack.enter_context(EmbeddedServer()).url
        anyio.run(main, redis_url)
