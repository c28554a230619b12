"""The worker process of bench.py: `_worker.py URL QUEUE burst|latency|soak|floor CONCURRENCY`.

floor is no queue_async worker: a bare redis-py BLPOP loop on the list bench:<QUEUE>:floor,
for the cost of waking a blocked client in another process (see bench.py's wake floor).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import anyio
import redis.asyncio

import queue_async as qa


async def wake_floor(url: str, name: str) -> None:
    """BLPOP timestamps until "stop"; print how long after its stamp each one arrived."""
    client = redis.asyncio.Redis.from_url(url)
    key = f"bench:{name}:floor"
    delays: list[float] = []
    await client.rpush(f"bench:{name}:ready", 1)
    while True:
        popped = await client.blpop([key], timeout=30)
        if popped is None or popped[1] == b"stop":
            break
        delays.append((time.time() - float(popped[1])) * 1000)
    print(json.dumps({"latencies_ms": delays}))
    await client.delete(f"bench:{name}:ready")
    await client.aclose()


def main() -> None:
    url, name, mode, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "floor":
        anyio.run(wake_floor, url, name)
        return
    logging.getLogger("queue_async").setLevel(logging.ERROR)  # soak retries log each try
    # BENCH_SHARDS=N serves a sharded queue (see shards.py).
    queue = qa.Queue(url, name=name, shards=int(os.environ.get("BENCH_SHARDS", "1")))
    latencies: list[float] = []

    @queue.task(name="bench.noop")
    async def noop(i: int) -> None:
        return None

    @queue.task(name="bench.stamp")
    async def stamp(sent: float) -> None:
        latencies.append((time.time() - sent) * 1000)

    # The soak mix: results kept briefly (so the server's memory stays flat), and a task that
    # fails its first try, which takes the retry path.
    @queue.task(name="bench.result", keep_result=2)
    async def result(i: int) -> dict[str, int]:
        return {"i": i, "square": i * i}

    @queue.task(name="bench.flaky", retries=2, keep_result=2)
    async def flaky(ctx: qa.JobContext, i: int) -> int:
        if ctx.attempt == 1:
            raise qa.Retry(defer=0.05)
        return i

    worker = qa.Worker(queue, concurrency=concurrency)
    if os.environ.get("BENCH_METRICS") == "1":  # what metrics cost per job (see bench.py)
        from queue_async.contrib.prometheus import Metrics  # noqa: PLC0415 - optional

        metrics = Metrics()
        metrics.watch_worker(worker)
        metrics.watch_queue(queue)

    @queue.task(name="bench.stop")
    async def stop() -> None:
        worker.stop()

    async def run() -> None:
        if mode == "burst":
            started, cpu = time.perf_counter(), time.process_time()
            await worker.run(burst=True)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            print(json.dumps({"seconds": seconds, "cpu_seconds": cpu}))
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await anyio.sleep(0.2)
                await queue.client.rpush(f"bench:{name}:ready", 1)
            print(json.dumps({"latencies_ms": latencies}))
        await queue.client.delete(f"bench:{name}:ready")
        await queue.close()

    # BENCH_LOOP=uvloop runs the worker on uvloop (see web_roundtrip.py --loop).
    anyio.run(run, backend_options={"use_uvloop": os.environ.get("BENCH_LOOP") == "uvloop"})


if __name__ == "__main__":
    main()
