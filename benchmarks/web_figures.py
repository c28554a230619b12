"""The web path's figures, with default settings: `python benchmarks/web_figures.py`.

- peak server connections added by 1,000 concurrent ``enqueue`` calls, and by 1,000
  concurrent ``result()`` waiters (a worker in the same process runs the jobs);
- seconds until ``enqueue`` fails against a server that accepts and never answers;
- the gap between tries of a job failing with ``backoff_base=0.05`` on a quiet queue.

Prints one JSON line. Uses only the public API, so it runs on older versions too.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
import uuid

import anyio
import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer


async def clients(client: redis.asyncio.Redis) -> int:
    return int((await client.info("clients"))["connected_clients"])


async def peak_during(client: redis.asyncio.Redis, work: object) -> tuple[int, object]:
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, await clients(client))
            await asyncio.sleep(0.01)

    sampler = asyncio.ensure_future(sample())
    try:
        result = await work  # type: ignore[misc]
    finally:
        stop.set()
        await sampler
    return peak, result


async def concurrent_enqueues(url: str, admin: redis.asyncio.Redis) -> dict[str, object]:
    async with qa.Queue(url, name=f"bench-{uuid.uuid4().hex[:8]}") as queue:
        base = await clients(admin)
        started = time.perf_counter()

        async def all_of_them() -> list[object]:
            return await asyncio.gather(
                *(queue.enqueue("t.noop", i) for i in range(1000)), return_exceptions=True
            )

        peak, outcomes = await peak_during(admin, all_of_them())
        took = time.perf_counter() - started
        failed = sum(isinstance(o, BaseException) for o in outcomes)  # type: ignore[union-attr]
        return {
            "enqueue_1000_failed": failed,
            "enqueue_1000_added_connections": peak - base,
            "enqueue_1000_seconds": round(took, 3),
        }


async def concurrent_waiters(url: str, admin: redis.asyncio.Redis) -> dict[str, object]:
    async with qa.Queue(url, name=f"bench-{uuid.uuid4().hex[:8]}") as queue:

        @queue.task
        async def double(i: int) -> int:
            return 2 * i

        handles = [await double.enqueue(i) for i in range(1000)]
        base = await clients(admin)
        waits = asyncio.gather(*(h.result(timeout=60) for h in handles), return_exceptions=True)
        # Every waiter subscribed and waiting, no job done yet.
        waiting_peak, _ = await peak_during(admin, asyncio.sleep(1.0))

        async def run_them() -> list[object]:
            async with qa.Worker(queue, concurrency=100):
                return await waits

        peak, outcomes = await peak_during(admin, run_them())
        wrong = sum(o != 2 * i for i, o in enumerate(outcomes))  # type: ignore[arg-type]
        return {
            "waiters_1000_wrong": wrong,
            "waiters_1000_added_connections_waiting": waiting_peak - base,
            "waiters_1000_added_connections_with_worker": peak - base,
        }


async def silent_server_failure() -> dict[str, object]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(100)
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
        async with qa.Queue(url, name="bench-silent") as queue:
            started = time.perf_counter()
            error = "none"
            with anyio.move_on_after(60):
                try:
                    await queue.enqueue("t.noop")
                except Exception as exc:
                    error = type(exc).__name__
            return {
                "silent_server_seconds": round(time.perf_counter() - started, 2),
                "silent_server_error": error,
            }


async def retry_gap(url: str) -> dict[str, object]:
    async with qa.Queue(url, name=f"bench-{uuid.uuid4().hex[:8]}") as queue:
        tries: list[float] = []

        @queue.task(retries=5, backoff_base=0.05, backoff_cap=0.05)
        async def flaky() -> str:
            tries.append(time.perf_counter())
            if len(tries) < 4:
                raise RuntimeError("not yet")
            return "ok"

        async with qa.Worker(queue):
            await asyncio.sleep(0.5)  # the worker is idle, blocked on Redis
            handle = await flaky.enqueue()
            with anyio.move_on_after(40):
                await handle.result(timeout=40)
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(tries)]
        return {"retry_gaps_seconds": gaps}


async def main() -> None:
    with EmbeddedServer() as server:
        admin = redis.asyncio.Redis.from_url(server.url)
        figures: dict[str, object] = {"redis_py": redis.__version__}
        figures |= await concurrent_enqueues(server.url, admin)
        figures |= await concurrent_waiters(server.url, admin)
        figures |= await retry_gap(server.url)
        figures |= await silent_server_failure()
        await admin.aclose()
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
