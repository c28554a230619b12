"""Tasks for tests that run workers as subprocesses (``python -m tests.apps.worker``).

The queue comes from the environment: REDIS_URL and QA_QUEUE.
"""

from __future__ import annotations

import os
import time

import anyio

import queue_async as qa

queue = qa.Queue(os.environ.get("REDIS_URL"), name=os.environ.get("QA_QUEUE", "apps"))
other = qa.Queue(queue.client, name=f"{queue.name}-other")
"""A second queue, for workers that serve two."""


@other.task(name="apps.shout")
async def shout(text: str) -> str:
    return text.upper()


@queue.task(name="apps.record", retries=3, backoff_base=0.05)
async def record(ctx: qa.JobContext, hold: float = 0.0) -> str:
    """Append ``<job id>:<attempt>`` to the runs list, then hold for ``hold`` seconds on the
    first attempt only (so a test can kill the worker mid-job)."""
    await ctx.queue.client.rpush(
        f"{ctx.queue._broker.keys.prefix}test:runs", f"{ctx.job_id}:{ctx.attempt}"
    )
    if ctx.attempt == 1 and hold:
        await anyio.sleep(hold)
    return ctx.job_id


@queue.task(name="apps.add")
async def add(a: int, b: int) -> int:
    return a + b


@queue.task(name="apps.limited", max_concurrency=1, retries=3, backoff_base=0.05)
async def limited(ctx: qa.JobContext, hold: float = 0.0) -> str:
    """``record`` under a limit of one running job across all workers."""
    result: str = await record.run(ctx, hold)
    return result


@queue.task(name="apps.gauged", max_concurrency=2)
async def gauged(ctx: qa.JobContext, hold: float) -> None:
    """Count jobs of this task running at once, across processes, in Redis."""
    client, prefix = ctx.queue.client, ctx.queue._broker.keys.prefix
    now = await client.incr(f"{prefix}test:gauge")
    await client.rpush(f"{prefix}test:gauge-seen", now)
    await anyio.sleep(hold)
    await client.decr(f"{prefix}test:gauge")


@queue.task(name="apps.stuck_sync", retries=0, timeout=60)
def stuck_sync(seconds: float) -> None:
    """A sync handler that ignores everything for ``seconds`` (Python cannot stop it)."""
    time.sleep(seconds)


@queue.task(name="apps.flaky", retries=2)
async def flaky(ctx: qa.JobContext) -> int:
    """Fails its first try (retried at once), then succeeds."""
    if ctx.attempt == 1:
        raise qa.Retry(defer=0)
    return ctx.attempt


@queue.task(name="apps.doomed")
async def doomed() -> None:
    raise qa.Fatal("doomed from the start")
