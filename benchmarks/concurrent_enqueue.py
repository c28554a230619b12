"""The web pattern: many producers in one process, each enqueueing one job at a time.

    python benchmarks/concurrent_enqueue.py [--producers N] [--jobs-per-producer N]

No worker runs. Prints one JSON line: jobs/s, p50/p99 latency of one enqueue, the client's
CPU per job and the server's. Uses only the public API, so it runs on older trees too
(``PYTHONPATH=/tmp/old python benchmarks/concurrent_enqueue.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import queue_async as qa
from queue_async.embedded import EmbeddedServer


async def run(url: str, producers: int, per_producer: int) -> dict[str, float]:
    async with qa.Queue(url, name=f"web{time.monotonic_ns()}") as queue:

        @queue.task(name="bench.noop")
        async def noop(n: int) -> None: ...

        await noop.enqueue(0)
        latencies: list[float] = []

        async def producer() -> None:
            for n in range(per_producer):
                started = time.perf_counter()
                await noop.enqueue(n)
                latencies.append(time.perf_counter() - started)

        info = await queue.client.info("cpu")
        server_before = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(producers)))
        wall = time.perf_counter() - wall_before
        cpu = time.process_time() - cpu_before
        info = await queue.client.info("cpu")
        server = float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) - server_before
    jobs = producers * per_producer
    latencies.sort()
    return {
        "producers": producers,
        "jobs_per_s": round(jobs / wall),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "client_cpu_us_per_job": round(cpu / jobs * 1e6, 1),
        "server_cpu_us_per_job": round(server / jobs * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--producers", type=int, nargs="+", default=[1, 10, 200])
    parser.add_argument("--jobs-per-producer", type=int, default=0)
    args = parser.parse_args()
    with EmbeddedServer() as server:
        for producers in args.producers:
            per = args.jobs_per_producer or max(20, 4000 // producers)
            print(json.dumps(asyncio.run(run(server.url, producers, per))), flush=True)


if __name__ == "__main__":
    main()
