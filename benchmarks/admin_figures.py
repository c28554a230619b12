"""Admin on a big queue: listing, bulk retry and purge, and how long each script call holds
the server.

    python benchmarks/admin_figures.py [--ready 1000000] [--dead 100000]

Fills one queue with ``--dead`` dead jobs (run and failed by a worker) and ``--ready`` ready
jobs, then times: a page of 50 dead jobs; pages of ready jobs from either end; a filtered
walk of the dead set; ``retry_dead`` of every dead job; ``purge("ready")``. For each: the
wall time, the script calls it made, and the longest single command the server ran while it
went (SLOWLOG, every command over 1 ms), with the worst PING latency seen by a probe that
pings every 5 ms meanwhile. Prints one JSON line per step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer


async def _script_calls(probe: redis.asyncio.Redis) -> int:
    stats = await probe.info("commandstats")
    return sum(
        int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_fcall", "cmdstat_evalsha")
    )


async def measure(
    probe: redis.asyncio.Redis, name: str, step: Callable[[], Awaitable[Any]]
) -> dict[str, Any]:
    await probe.config_set("slowlog-log-slower-than", 1000)
    await probe.slowlog_reset()
    calls_before = await _script_calls(probe)
    worst_ping = 0.0
    running = True

    async def ping() -> None:
        nonlocal worst_ping
        while running:
            started = time.perf_counter()
            await probe.ping()
            worst_ping = max(worst_ping, time.perf_counter() - started)
            await asyncio.sleep(0.005)

    pinger = asyncio.create_task(ping())
    started = time.perf_counter()
    outcome = await step()
    seconds = time.perf_counter() - started
    running = False
    await pinger
    slow = await probe.slowlog_get(128)
    longest = max((entry["duration"] for entry in slow), default=0)
    return {
        "step": name,
        "seconds": round(seconds, 3),
        "script_calls": await _script_calls(probe) - calls_before,
        "longest_command_ms": round(longest / 1000, 2),
        "commands_over_1ms": len(slow),
        "worst_ping_ms": round(worst_ping * 1000, 2),
        "outcome": outcome,
    }


async def run(url: str, ready: int, dead: int) -> None:
    probe = redis.asyncio.Redis.from_url(url)
    async with qa.Queue(url, name="admin-bench") as queue:

        @queue.task(name="bench.noop")
        async def noop(n: int) -> None: ...

        @queue.task(name="bench.boom", retries=0)
        async def boom(n: int) -> None:
            raise qa.Fatal(f"card declined for order {n}")

        started = time.perf_counter()
        for first in range(0, dead, 5000):
            await queue.enqueue_many(boom.call(n) for n in range(first, min(dead, first + 5000)))
        # Every failure logs a line; the dead set keeps 10,000 by default: room for them all.
        logging.getLogger("queue_async").setLevel(logging.ERROR)
        worker = qa.Worker(queue, concurrency=500, dead_max_len=max(dead, 1))
        await worker.run(burst=True, handle_signals=False)
        for first in range(0, ready, 5000):
            await queue.enqueue_many(noop.call(n) for n in range(first, min(ready, first + 5000)))
        stats = await queue.stats()
        print(
            json.dumps(
                {
                    "step": "fill",
                    "seconds": round(time.perf_counter() - started, 1),
                    "ready": stats.ready,
                    "dead": stats.dead,
                }
            ),
            flush=True,
        )
        admin = qa.Admin(queue)

        async def page(state: Any, **options: Any) -> int:
            return len((await admin.jobs(state, limit=50, **options)).jobs)

        async def search() -> int:
            found, cursor = 0, None
            while True:
                page = await admin.jobs("dead", search="order 99999", cursor=cursor)
                found += len(page.jobs)
                cursor = page.cursor
                if cursor is None:
                    return found

        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("page of 50 dead", lambda: page("dead")),
            ("page of 50 dead, newest first", lambda: page("dead", order="newest")),
            ("page of 50 ready, oldest first", lambda: page("ready")),
            ("page of 50 ready, newest first", lambda: page("ready", order="newest")),
            ("search the dead set (every page)", search),
            ("retry_dead of all", lambda: admin.retry_dead(limit=dead)),
            ("purge ready", lambda: admin.purge("ready", limit=ready + dead)),
        ]
        for name, step in steps:
            print(json.dumps(await measure(probe, name, step)), flush=True)
    await probe.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ready", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--url", help="an existing server (it gets one queue, admin-bench)")
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args.ready, args.dead))
        return
    with EmbeddedServer() as server:
        asyncio.run(run(server.url, args.ready, args.dead))


if __name__ == "__main__":
    main()
