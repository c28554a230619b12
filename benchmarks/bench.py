"""queue_async benchmarks: throughput and idle latency, printed as JSON lines.

    python benchmarks/bench.py [throughput|latency|all] [--jobs N] [--concurrency N]
    python benchmarks/bench.py soak [--soak-jobs N]
    python benchmarks/bench.py floor [--latency-jobs N]

floor (also part of "all") is the latency scenario without queue_async: a bare redis-py
LPUSH of a timestamp to another process blocked in BLPOP, 5 ms apart. It is the least any
enqueue-to-idle-worker path through redis-py costs on the machine, to read the latency
scenario against.

soak (not part of "all") runs one worker process through a long stream of jobs (no-ops,
results, retries) and samples its resident memory, to show it does not grow per job.

Uses $REDIS_URL if set, else a private embedded server. The worker runs in its own process
(benchmarks/_worker.py), as in production; this process only enqueues and measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anyio
import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer

HERE = Path(__file__).parent


def emit(record: dict[str, object]) -> None:
    record = {"library": "queue_async", "python": platform.python_version(), **record}
    print(json.dumps(record), flush=True)


def start_worker(url: str, queue_name: str, mode: str, concurrency: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "_worker.py"), url, queue_name, mode, str(concurrency)],
        stdout=subprocess.PIPE,
        text=True,
    )


async def server_cpu(client: redis.asyncio.Redis) -> float:
    """CPU seconds the server has used so far (user + system)."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def used_memory(client: redis.asyncio.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def throughput(url: str, jobs: int, concurrency: int) -> None:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    queue = qa.Queue(url, name=name)
    noop = queue.call("bench.noop")
    specs = [queue.call("bench.noop", i) for i in range(jobs)]
    del noop
    memory = await used_memory(queue.client)
    server_before = await server_cpu(queue.client)
    started, cpu = time.perf_counter(), time.process_time()
    await queue.enqueue_many(specs)
    enqueue_s, enqueue_cpu = time.perf_counter() - started, time.process_time() - cpu
    server_enqueue = await server_cpu(queue.client)
    memory = await used_memory(queue.client) - memory
    worker = start_worker(url, name, "burst", concurrency)
    out, _ = worker.communicate(timeout=600)
    server_process = await server_cpu(queue.client) - server_enqueue
    report = json.loads(out.strip().splitlines()[-1])
    stats = await queue.stats()
    assert stats.processed == jobs, stats
    emit(
        {
            "scenario": "throughput",
            "jobs": jobs,
            "concurrency": concurrency,
            "enqueue_jobs_per_s": round(jobs / enqueue_s),
            "enqueue_cpu_us_per_job": round(enqueue_cpu / jobs * 1e6, 1),
            "enqueue_server_cpu_us_per_job": round(
                (server_enqueue - server_before) / jobs * 1e6, 1
            ),
            "queued_bytes_per_job": round(memory / jobs),
            "process_jobs_per_s": round(jobs / report["seconds"]),
            # CPU time of the worker process per job: steadier than rates on a noisy machine.
            "worker_cpu_us_per_job": round(report["cpu_seconds"] / jobs * 1e6, 1),
            # Includes the worker's start and stop (a few calls), over 20,000 jobs.
            "process_server_cpu_us_per_job": round(server_process / jobs * 1e6, 1),
        }
    )
    await queue.client.delete(*[k async for k in queue.client.scan_iter(f"qa:{{{name}}}:*")])
    await queue.close()


def _percentiles(delays: list[float]) -> dict[str, float]:
    delays = sorted(delays)
    return {
        "p50_ms": round(statistics.median(delays), 3),
        "p99_ms": round(delays[int(len(delays) * 0.99) - 1], 3),
        "max_ms": round(delays[-1], 3),
    }


async def latency(url: str, jobs: int, gap: float) -> None:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    queue = qa.Queue(url, name=name)
    worker = start_worker(url, name, "latency", 100)
    client = redis.asyncio.Redis.from_url(url)
    await client.blpop([f"bench:{name}:ready"], timeout=30)  # the worker is up and idle
    for _ in range(jobs):
        await queue.enqueue("bench.stamp", time.time())
        await anyio.sleep(gap)
    await queue.enqueue("bench.stop")
    out, _ = worker.communicate(timeout=120)
    delays = json.loads(out.strip().splitlines()[-1])["latencies_ms"]
    emit({"scenario": "latency", "jobs": len(delays), **_percentiles(delays)})
    await client.aclose()
    await queue.close()


async def wake_floor(url: str, jobs: int, gap: float) -> None:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    consumer = start_worker(url, name, "floor", 1)
    client = redis.asyncio.Redis.from_url(url)
    await client.blpop([f"bench:{name}:ready"], timeout=30)  # up; it blocks right after
    for _ in range(jobs):
        await client.rpush(f"bench:{name}:floor", repr(time.time()))
        await anyio.sleep(gap)
    await client.rpush(f"bench:{name}:floor", "stop")
    out, _ = consumer.communicate(timeout=60)
    delays = json.loads(out.strip().splitlines()[-1])["latencies_ms"]
    emit({"scenario": "wake_floor", "jobs": len(delays), **_percentiles(delays)})
    await client.aclose()


def rss_kb(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def soak(url: str, jobs: int, concurrency: int) -> None:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    queue = qa.Queue(url, name=name)
    worker = start_worker(url, name, "soak", concurrency)
    batch, most_ready = 5_000, 20_000
    samples: list[tuple[int, int]] = []  # (jobs processed, worker RSS in KiB)
    started = time.perf_counter()
    sent = 0
    while sent < jobs:
        specs = []
        for i in range(sent, min(sent + batch, jobs)):
            kind = "bench.noop" if i % 20 else ("bench.result" if i % 40 else "bench.flaky")
            specs.append(queue.call(kind, i))
        await queue.enqueue_many(specs)
        sent += len(specs)
        while (stats := await queue.stats()).ready > most_ready:  # noqa: ASYNC110 - sampling
            await anyio.sleep(0.05)
        samples.append((stats.processed, rss_kb(worker.pid)))
    while (stats := await queue.stats()).processed < jobs:  # noqa: ASYNC110 - sampling
        await anyio.sleep(0.1)
    samples.append((stats.processed, rss_kb(worker.pid)))
    seconds = time.perf_counter() - started
    await queue.enqueue("bench.stop")
    worker.communicate(timeout=60)
    # Past the first tenth (imports, caches and pools filling up), memory should be flat.
    warm = next(s for s in samples if s[0] >= jobs // 10)
    end = samples[-1]
    growth = (end[1] - warm[1]) * 1024 / max(1, end[0] - warm[0])
    emit(
        {
            "scenario": "soak",
            "jobs": jobs,
            "concurrency": concurrency,
            "jobs_per_s": round(jobs / seconds),
            "retried": stats.retried,
            "rss_kb_first_sample": samples[0][1],
            "rss_kb_after_warmup": warm[1],
            "rss_kb_end": end[1],
            "rss_kb_max": max(rss for _, rss in samples),
            "growth_bytes_per_job_after_warmup": round(growth, 3),
        }
    )
    await queue.client.delete(*[k async for k in queue.client.scan_iter(f"qa:{{{name}}}:*")])
    await queue.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "scenario",
        nargs="?",
        default="all",
        choices=["all", "throughput", "latency", "floor", "soak"],
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--soak-jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = EmbeddedServer()
        server.start()
        url = server.url
    try:
        if args.scenario in ("all", "throughput"):
            anyio.run(throughput, url, args.jobs, args.concurrency)
        if args.scenario in ("all", "latency"):
            anyio.run(latency, url, args.latency_jobs, 0.005)
        if args.scenario in ("all", "floor"):
            anyio.run(wake_floor, url, args.latency_jobs, 0.005)
        if args.scenario == "soak":
            anyio.run(soak, url, args.soak_jobs, args.concurrency)
    finally:
        if server:
            server.cleanup()


if __name__ == "__main__":
    main()
