"""The chaos run's worker process: ``python -m tests.chaos.app URL QUEUE``.

Each execution of a job adds one record to a set (``<prefix>chaos:runs``) before it does its
work, so the driver can count executions. The record carries an id of its own: a call
repeated after a dropped connection adds nothing twice.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid

import anyio

import queue_async as qa

SETTINGS = qa.WorkerSettings(
    concurrency=10,
    lease=3.0,
    heartbeat=0.5,
    shutdown_grace=5.0,
    max_idle_wait=1.0,
    reconnect_max=1.0,
    # A job may be held by several killed workers in a row; it must still run.
    max_stalls=50,
)


def runs_key(queue: qa.Queue) -> str:
    return f"{queue._broker.keys.prefix}chaos:runs"


def build_queue(
    url: str, name: str, durability: qa.Durability | None = None
) -> tuple[qa.Queue, qa.Task[[int], None], qa.Task[[], None]]:
    """The queue and its two tasks: ``work`` (sleeps ``ms``) and ``doomed`` (always fatal)."""
    queue = qa.Queue(url, name=name, durability=durability)

    async def record(ctx: qa.JobContext) -> None:
        entry = f"{ctx.job_id} {os.getpid()} {time.time():.4f} {uuid.uuid4().hex[:8]}"
        # Redis may be away (restart, dropped connections): the record must land before
        # the work counts as started, so keep trying.
        with anyio.fail_after(60):
            while True:
                try:
                    await queue.client.sadd(runs_key(queue), entry)
                    return
                except Exception:  # any broker error: wait and repeat
                    await anyio.sleep(0.05)

    @queue.task(name="chaos.work", retries=50, backoff_base=0.05, backoff_cap=0.5, timeout=30)
    async def work(ctx: qa.JobContext, ms: int) -> None:
        await record(ctx)
        await anyio.sleep(ms / 1000)

    @queue.task(name="chaos.doomed", retries=5)
    async def doomed(ctx: qa.JobContext) -> None:
        await record(ctx)
        raise qa.Fatal("meant to die")

    return queue, work, doomed


async def main(url: str, name: str) -> None:
    queue, _, _ = build_queue(url, name)
    try:
        await qa.Worker(queue, settings=SETTINGS).run(handle_signals=True)
    finally:
        await queue.close()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(message)s"
    )
    anyio.run(main, sys.argv[1], sys.argv[2])
