"""The quickstart: enqueue real jobs, run a worker, print what comes back.

    python examples/quickstart.py

Uses $REDIS_URL if set; otherwise starts a private embedded Valkey server and stops it after.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack
from typing import Any

import anyio

import queue_async as qa
from queue_async.embedded import EmbeddedServer


def define_tasks(queue: qa.Queue) -> tuple[qa.Task[..., Any], ...]:

    @queue.task(retries=2, timeout=10)
    async def add(ctx: qa.JobContext, a: int, b: int) -> int:
        print(f"  [worker] add({a}, {b}) try {ctx.attempt} of job {ctx.job_id[:8]}")
        return a + b

    @queue.task(retries=2, backoff_base=0.1)
    async def flaky(ctx: qa.JobContext) -> str:
        if ctx.attempt < 2:
            raise RuntimeError("the first try always fails")
        return f"succeeded on try {ctx.attempt}"

    @queue.task(retries=0)
    def resize(path: str) -> str:  # a plain def runs in a worker thread
        time.sleep(0.05)
        return path.replace(".png", "-small.png")

    @queue.task(retries=0)
    async def doomed() -> None:
        raise ValueError("this job always fails")

    return add, flaky, resize, doomed


async def main(url: str) -> None:
    queue = qa.Queue(url, name="quickstart")
    add, flaky, resize, doomed = define_tasks(queue)
    print(f"queue {queue.name!r} on {url}")

    one = await add.enqueue(1, 2)
    many = await queue.enqueue_many([add.call(i, i) for i in range(5)])
    later = await add.options(delay=0.5).enqueue(20, 22)
    retried = await flaky.enqueue()
    thumb = await resize.enqueue("cat.png")
    failing = await doomed.enqueue()
    print(f"enqueued {3 + len(many) + 2} jobs; starting a worker")

    async with qa.Worker(queue, concurrency=10):
        print("add(1, 2) =", await one.result(timeout=10))
        print("enqueue_many results:", [await h.result(timeout=10) for h in many])
        print("delayed add(20, 22) =", await later.result(timeout=10))
        print("flaky:", await retried.result(timeout=10))
        print("resize:", await thumb.result(timeout=10))
        try:
            await failing.result(timeout=10)
        except qa.JobFailed as exc:
            print("doomed failed as expected:", (exc.error or "").strip().splitlines()[-1])
    print("stats:", (await queue.stats()).model_dump())
    await queue.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="  [log] %(message)s")
    with ExitStack() as stack:
        url = os.environ.get("REDIS_URL")
        if not url:
            url = stack.enter_context(EmbeddedServer()).url
        anyio.run(main, url)
