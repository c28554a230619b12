"""The cost of ``Queue(durability=...)``: enqueue and processing with WAIT on vs off.

    python benchmarks/durability.py [--rounds 5] [--jobs 4000] [--producers 1 50]

Starts a master and one replica (the embedded Valkey, on loopback) and runs interleaved
rounds, off then on, each on a fresh queue: single enqueues from ``--producers`` concurrent
producers (the web pattern; concurrent ones are coalesced into one script call + WAIT),
and a worker in this process draining ``--jobs`` no-op jobs (enqueued beforehand without
durability) in burst mode, where each completion batch and failure carries its WAIT.
Prints one JSON line per round and mode, then the medians: jobs/s, the client's CPU per
job (this process) and the master's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis

import queue_async as qa
from queue_async.embedded import EmbeddedServer

ON = qa.Durability(replicas=1, timeout=1.0)


def _server_cpu(port: int) -> float:
    with redis.Redis(port=port) as node:
        info = node.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _measure(port: int, jobs: int, work: Callable[[], Awaitable[None]]) -> dict[str, float]:
    server, cpu, wall = _server_cpu(port), time.process_time(), time.perf_counter()
    await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server = _server_cpu(port) - server
    return {
        "jobs_per_s": round(jobs / wall),
        "client_cpu_us_per_job": round(cpu / jobs * 1e6, 1),
        "server_cpu_us_per_job": round(server / jobs * 1e6, 1),
    }


def _queue(url: str, durability: qa.Durability | None, name: str | None = None) -> qa.Queue:
    queue = qa.Queue(url, name=name or f"dur{time.monotonic_ns()}", durability=durability)

    @queue.task(name="bench.noop")
    async def noop(n: int) -> None:
        return None

    return queue


async def enqueue_round(
    url: str, port: int, durability: qa.Durability | None, producers: int, jobs: int
) -> dict[str, float]:
    async with _queue(url, durability) as queue:
        await queue.enqueue("bench.noop", 0)  # checks the server, loads the functions
        per = jobs // producers

        async def producer() -> None:
            for n in range(per):
                await queue.enqueue("bench.noop", n)

        async def work() -> None:
            await asyncio.gather(*(producer() for _ in range(producers)))

        return await _measure(port, per * producers, work)


async def process_round(
    url: str, port: int, durability: qa.Durability | None, jobs: int
) -> dict[str, float]:
    async with _queue(url, None) as loader:
        name = loader.name
        await loader.enqueue_many(loader.call("bench.noop", n) for n in range(jobs))
    async with _queue(url, durability, name) as queue:

        async def work() -> None:
            await qa.Worker(queue, concurrency=100).run(burst=True, handle_signals=False)

        return await _measure(port, jobs, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--producers", type=int, nargs="+", default=[1, 50])
    args = parser.parse_args()
    logging.getLogger("queue_async").setLevel(logging.ERROR)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    delay = ("--repl-diskless-sync-delay", "0")
    with EmbeddedServer(args=delay) as master:
        replica_of = ("--replicaof", f"127.0.0.1 {master.port}")
        with EmbeddedServer(args=replica_of):
            _wait_replica(master.port)
            for round_ in range(args.rounds):
                for mode, durability in (("off", None), ("on", ON)):
                    runs: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
                        (f"enqueue x{p}", _bind(enqueue_round, master, durability, p, args.jobs))
                        for p in args.producers
                    ]
                    runs.append(("process", _bind(process_round, master, durability, args.jobs)))
                    for what, run in runs:
                        figures = asyncio.run(run())
                        results.setdefault((what, mode), []).append(figures)
                        line = {"round": round_, "what": what, "durability": mode, **figures}
                        print(json.dumps(line), flush=True)
    for (what, mode), rows in results.items():
        medians = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(json.dumps({"median": what, "durability": mode, **medians}), flush=True)


def _bind(
    fn: Callable[..., Awaitable[dict[str, float]]], master: EmbeddedServer, *args: Any
) -> Callable[[], Awaitable[dict[str, float]]]:
    return lambda: fn(master.url, master.port, *args)


def _wait_replica(port: int) -> None:
    with redis.Redis(port=port) as node:
        for _ in range(1000):
            info = node.info("replication")
            if info.get("slave0", {}).get("state") == "online":
                return
            time.sleep(0.02)
    raise RuntimeError("the replica did not sync")


if __name__ == "__main__":
    main()
