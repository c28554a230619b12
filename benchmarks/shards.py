"""One server against a 3-master cluster with a sharded queue: processing rate and the
servers' CPU per job.

    python benchmarks/shards.py [--jobs N] [--workers N] [--concurrency N] [--rounds N]

Each round enqueues ``--jobs`` no-op jobs (``enqueue_many``), then starts ``--workers``
burst worker processes (benchmarks/_worker.py) and times them until all jobs are done, on:

- ``single``: one embedded Valkey, a queue of one shard;
- ``cluster``: three local Valkey masters (the test suite's LocalCluster), a queue of three
  shards, one per master.

Rounds alternate between the two so that the machine's noise falls on both alike. It prints
one JSON line per run: jobs/s, the workers' CPU per job, and each server's CPU per job (from
INFO's used_cpu_user + used_cpu_sys).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import redis

import queue_async as qa
from queue_async.embedded import EmbeddedServer

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from tests.cluster.conftest import LocalCluster  # noqa: E402 - after the path is set


def server_cpu(ports: list[int]) -> list[float]:
    cpu = []
    for port in ports:
        with redis.Redis(port=port) as node:
            info = node.info("cpu")
            cpu.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return cpu


async def enqueue(url: str, name: str, shards: int, jobs: int) -> None:
    async with qa.Queue(url, name=name, shards=shards) as queue:
        for start in range(0, jobs, 5000):
            count = min(5000, jobs - start)
            await queue.enqueue_many([queue.call("bench.noop", i) for i in range(count)])


def run(kind: str, url: str, ports: list[int], shards: int, args: argparse.Namespace) -> dict:
    name = f"shards-{uuid.uuid4().hex[:8]}"
    anyio.run(enqueue, url, name, shards, args.jobs)
    before = server_cpu(ports)
    started = time.perf_counter()
    env = {**os.environ, "BENCH_SHARDS": str(shards)}
    workers = [
        subprocess.Popen(
            [sys.executable, str(HERE / "_worker.py"), url, name, "burst", str(args.concurrency)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(args.workers)
    ]
    reports = [json.loads(w.communicate(timeout=600)[0].strip().splitlines()[-1]) for w in workers]
    wall = time.perf_counter() - started
    seconds = max(r["seconds"] for r in reports)  # the workers' own time, less their start
    after = server_cpu(ports)
    return {
        "kind": kind,
        "shards": shards,
        "jobs": args.jobs,
        "workers": args.workers,
        "jobs_per_s": round(args.jobs / seconds),
        "wall_s": round(wall, 2),
        "worker_cpu_us_per_job": round(sum(r["cpu_seconds"] for r in reports) / args.jobs * 1e6, 1),
        "server_cpu_us_per_job": [
            round((a - b) / args.jobs * 1e6, 1) for a, b in zip(after, before, strict=True)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"single": [], "cluster": []}
    with EmbeddedServer() as single, tempfile.TemporaryDirectory() as folder:
        cluster = LocalCluster(Path(folder))
        try:
            single_port = int(single.url.rsplit(":", 1)[1].split("/")[0])
            for _ in range(args.rounds):
                for kind in ("single", "cluster"):
                    if kind == "single":
                        record = run(kind, single.url, [single_port], 1, args)
                    else:
                        record = run(kind, cluster.url, cluster.ports, 3, args)
                    results[kind].append(record)
                    print(json.dumps(record), flush=True)
        finally:
            cluster.stop()
    for kind, runs in results.items():
        rates = [r["jobs_per_s"] for r in runs]
        print(json.dumps({"kind": kind, "median_jobs_per_s": statistics.median(rates)}))


if __name__ == "__main__":
    main()
