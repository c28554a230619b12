"""A queue with an every-second cron, for worker processes started by tests/test_cron.py.

The queue comes from the environment: REDIS_URL and QA_QUEUE.
"""

from __future__ import annotations

import os

import queue_async as qa

queue = qa.Queue(os.environ.get("REDIS_URL"), name=os.environ.get("QA_QUEUE", "cron"))


@queue.cron("* * * * * *", name="every-second")
async def tick(ctx: qa.JobContext) -> None:
    """Record which tick ran."""
    await ctx.queue.client.rpush(f"{ctx.queue._broker.keys.prefix}test:ticks", ctx.job_id)
