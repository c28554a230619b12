"""The web round trip: many clients in one process, each enqueueing a job and awaiting its result.

    python benchmarks/web_roundtrip.py [--clients N] [--seconds S] [--concurrency N]
                                       [--loop asyncio|uvloop]

One worker process (benchmarks/_worker.py) runs the jobs. Prints one JSON line: completed
round trips/s, p50/p99 of one round trip, CPU per round trip of the client, the worker process
and the server (and the server's own time in script calls, ``INFO commandstats``), and the
peak number of server connections while it ran (``INFO clients``, less the probe's own).
CPU time is far less sensitive to other load on the machine than the rate is.
Uses only the public API, so it runs on older trees too
(``PYTHONPATH=/tmp/old python benchmarks/web_roundtrip.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer

WORKER = Path(__file__).with_name("_worker.py")


async def _cpu(client: redis.asyncio.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _script_usec(client: redis.asyncio.Redis) -> tuple[float, int]:
    """Server microseconds spent in script calls (FCALL on Redis 7+/Valkey, else EVALSHA),
    and the number of calls."""
    stats = await client.info("commandstats")
    found = [stats.get(f"cmdstat_{name}", {}) for name in ("fcall", "evalsha")]
    return sum(float(s.get("usec", 0)) for s in found), sum(int(s.get("calls", 0)) for s in found)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(
    url: str, clients: int, seconds: float, concurrency: int, loop: str
) -> dict[str, float | str]:
    name = f"rt{time.monotonic_ns()}"
    probe = redis.asyncio.Redis.from_url(url)
    worker = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        [sys.executable, str(WORKER), url, name, "soak", str(concurrency)],
        env={**os.environ, "BENCH_LOOP": loop},
    )
    try:
        async with qa.Queue(url, name=name) as queue:

            @queue.task(name="bench.noop")
            async def noop(n: int) -> None: ...

            # The worker is up once it has run a job.
            await (await noop.enqueue(-1)).result(timeout=60)
            latencies: list[float] = []
            errors = 0
            peak = 0
            stop_at = time.perf_counter() + seconds

            async def client() -> None:
                nonlocal errors
                n = 0
                while time.perf_counter() < stop_at:
                    started = time.perf_counter()
                    try:
                        await (await noop.enqueue(n)).result(timeout=30)
                    except qa.QueueAsyncError:
                        errors += 1
                        continue
                    latencies.append(time.perf_counter() - started)
                    n += 1

            async def watch_connections() -> None:
                nonlocal peak
                while time.perf_counter() < stop_at:
                    connected = int((await probe.info("clients"))["connected_clients"])
                    peak = max(peak, connected - 1)
                    await asyncio.sleep(0.2)

            server_before = await _cpu(probe)
            scripts_before = await _script_usec(probe)
            worker_before = _process_cpu(worker.pid)
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            await asyncio.gather(watch_connections(), *(client() for _ in range(clients)))
            wall = time.perf_counter() - wall_before
            cpu = time.process_time() - cpu_before
            worker_cpu = _process_cpu(worker.pid) - worker_before
            server = await _cpu(probe) - server_before
            scripts_after = await _script_usec(probe)
            scripts = scripts_after[0] - scripts_before[0]
            calls = scripts_after[1] - scripts_before[1]
            await queue.enqueue("bench.stop")
    finally:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        await probe.aclose()
    done = len(latencies)
    latencies.sort()
    return {
        "loop": loop,
        "clients": clients,
        "round_trips_per_s": round(done / wall),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(done * 0.99)] * 1000, 2),
        "errors": errors,
        "peak_connections": peak,
        "client_cpu_us_per_rt": round(cpu / done * 1e6, 1),
        "worker_cpu_us_per_rt": round(worker_cpu / done * 1e6, 1),
        "server_cpu_us_per_rt": round(server / done * 1e6, 1),
        "server_script_us_per_rt": round(scripts / done, 1),
        "script_calls_per_rt": round(calls / done, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[200])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--url", help="an existing server (default: a private embedded one)")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        nargs="+",
        default=["asyncio"],
        help="event loop of the clients and the worker; several are run interleaved",
    )
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(EmbeddedServer()).url
        for _ in range(args.rounds):
            for loop in args.loop:
                for clients in args.clients:
                    main = run(url, clients, args.seconds, args.concurrency, loop)
                    if loop == "uvloop":
                        import uvloop  # noqa: PLC0415 - optional, only when asked for

                        result = uvloop.run(main)
                    else:
                        result = asyncio.run(main)
                    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
