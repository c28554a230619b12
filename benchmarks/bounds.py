"""How long single script calls hold the server with a large backlog:
`python benchmarks/bounds.py [--jobs 1000000] [--held 200000]`.

- cancel of queued jobs near the tail of a ``--jobs`` backlog (ms per call, client side);
- resume of a task with ``--held`` held jobs: the whole call, and the longest single
  command the server ran meanwhile (SLOWLOG, threshold 0).

Prints one JSON line. Uses only the public API (and SLOWLOG), so it runs on older versions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer


async def cancel_near_tail(url: str, jobs: int) -> dict[str, object]:
    async with qa.Queue(url, name=f"bounds-{uuid.uuid4().hex[:8]}") as queue:
        handles = []
        for start in range(0, jobs, 50_000):
            size = min(50_000, jobs - start)
            handles += await queue.enqueue_many([queue.call("t.noop", i) for i in range(size)])
        took = []
        for handle in handles[-20:]:
            began = time.perf_counter()
            assert await handle.cancel()
            took.append((time.perf_counter() - began) * 1000)
        took.sort()
        return {"cancel_ms_p50": round(took[10], 3), "cancel_ms_max": round(took[-1], 3)}


async def resume_many(url: str, held: int, admin: redis.asyncio.Redis) -> dict[str, object]:
    async with qa.Queue(url, name=f"bounds-{uuid.uuid4().hex[:8]}") as queue:

        @queue.task(name="bounds.report")
        async def report(i: int) -> None: ...

        await queue.pause(report)
        for start in range(0, held, 50_000):
            size = min(50_000, held - start)
            await queue.enqueue_many([report.call(i) for i in range(size)])
        worker = qa.Worker(queue, lease_batch=1000)
        await worker.run(burst=True, handle_signals=False)  # looks at every job: all held
        await admin.config_set("slowlog-max-len", "10000")
        await admin.config_set("slowlog-log-slower-than", "0")
        await admin.slowlog_reset()
        began = time.perf_counter()
        await queue.resume(report)
        whole = time.perf_counter() - began
        entries = await admin.slowlog_get(10000)
        await admin.config_set("slowlog-log-slower-than", "10000")
        longest = max((e["duration"] for e in entries), default=0)
        return {
            "resume_held": held,
            "resume_seconds": round(whole, 3),
            "resume_longest_command_ms": round(longest / 1000, 1),
        }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--held", type=int, default=200_000)
    args = parser.parse_args()
    with EmbeddedServer() as server:
        admin = redis.asyncio.Redis.from_url(server.url)
        figures: dict[str, object] = {"jobs": args.jobs}
        figures |= await cancel_near_tail(server.url, args.jobs)
        await admin.flushall()
        figures |= await resume_many(server.url, args.held, admin)
        await admin.aclose()
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
