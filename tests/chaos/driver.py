"""The chaos run: worker processes process jobs while workers, connections and the server fail.

    python -m tests.chaos.driver [--jobs 20000] [--duration 240] [--workers 3]

During the run a driver kills a random worker with SIGKILL about every second (and starts a
new one), sends SIGTERM to one worker with jobs running (the graceful path), drops every
client connection (``CLIENT KILL TYPE normal``) twice, restarts the server once (SIGKILL,
AOF with ``appendfsync always``) while jobs are in flight, and runs the server out of memory
once (``maxmemory`` lowered below what it uses, so every write is refused, then raised).
At the end it checks, from what Redis holds and from the record each execution leaves,
that no job was lost, none was recorded complete twice, no worker exited by itself, and
extra executions happened only to jobs a stopped worker held.
Prints the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio
import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer
from tests.chaos.app import build_queue, runs_key

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ChaosConfig:
    jobs: int = 2000
    doomed: int = 20
    duration: float = 15.0
    workers: int = 3
    kill_every: float = 1.0
    max_job_ms: int = 40
    delayed_share: float = 0.1
    drain_timeout: float = 60.0
    oom_seconds: float = 1.0
    seed: int | None = None


@dataclass
class ChaosReport:
    jobs: int
    doomed: int
    seconds: float = 0.0
    workers_started: int = 0
    kills: int = 0
    sigterms: int = 0
    server_restarts: int = 0
    connection_drops: int = 0
    oom_phases: int = 0
    worker_exits: int = 0
    """Workers that exited by themselves (a refusal or an outage must never do that)."""
    clients_dropped: int = 0
    done: int = 0
    lost: list[str] = field(default_factory=list)
    completion_records: int = 0
    duplicate_completions: int = 0
    stale_token_refused: bool = False
    executions: int = 0
    extra_executions: int = 0
    unexplained_extra: list[str] = field(default_factory=list)
    stuck: dict[str, int] = field(default_factory=dict)
    unexpected_dead: list[str] = field(default_factory=list)
    max_recovery_s: float = 0.0
    max_wait_to_start_s: float = 0.0

    def problems(self) -> list[str]:
        """What went wrong; empty when every guarantee held."""
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} jobs lost, e.g. {self.lost[:5]}")
        if self.duplicate_completions:
            found.append(f"{self.duplicate_completions} duplicate completion records")
        if not self.stale_token_refused:
            found.append("complete with a stale token was not refused")
        if self.unexplained_extra:
            found.append(
                f"extra executions of jobs no stopped worker held: {self.unexplained_extra[:5]}"
            )
        if any(self.stuck.values()):
            found.append(f"jobs stuck: {self.stuck}")
        if self.worker_exits:
            found.append(f"{self.worker_exits} workers exited by themselves")
        if self.unexpected_dead:
            found.append(f"jobs in dead that were meant to run: {self.unexpected_dead[:5]}")
        return found


class Chaos:
    """Owns the server, the worker processes and the fault schedule of one run."""

    def __init__(self, config: ChaosConfig, server: EmbeddedServer, name: str) -> None:
        self.config = config
        self.server = server
        self.name = name
        self.random = random.Random(config.seed)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stopped_at: dict[int, float] = {}  # pid -> when it was killed or told to stop
        self.report = ChaosReport(jobs=config.jobs, doomed=config.doomed)
        self.logs = Path(server.directory) / "workers.log"

    def start_worker(self) -> None:
        with self.logs.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.app", self.server.url, self.name],
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        self.workers.append(process)
        self.report.workers_started += 1

    def kill_one(self) -> None:
        victim = self.workers.pop(self.random.randrange(len(self.workers)))
        self.stopped_at[victim.pid] = time.time()
        victim.kill()
        victim.wait()
        self.report.kills += 1
        self.start_worker()

    async def terminate_one(self) -> None:
        """SIGTERM: the worker finishes or hands back its jobs, then exits by itself.

        The oldest worker: one started a moment ago may still be importing, before its
        signal handlers exist, and would die of the signal rather than stop."""
        victim = self.workers.pop(0)
        self.stopped_at[victim.pid] = time.time()
        victim.send_signal(signal.SIGTERM)
        self.report.sigterms += 1
        self.start_worker()
        grace = 5.0 + 5.0
        with anyio.fail_after(grace + 10):
            while victim.poll() is None:
                await anyio.sleep(0.05)
        if victim.returncode != 0:
            raise AssertionError(f"worker {victim.pid} exited {victim.returncode} on SIGTERM")

    async def drop_connections(self) -> None:
        async with redis.asyncio.Redis.from_url(self.server.url) as admin:
            dropped = await admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
        self.report.connection_drops += 1
        self.report.clients_dropped += int(dropped)

    async def out_of_memory(self) -> None:
        """Every write refused (OOM under noeviction) for a while, then memory is back."""
        async with redis.asyncio.Redis.from_url(self.server.url) as admin:
            await admin.config_set("maxmemory", "1")
            await anyio.sleep(self.config.oom_seconds)
            await admin.config_set("maxmemory", "0")
        self.report.oom_phases += 1

    def count_exits(self) -> None:
        """Workers that ended without being told to: counted, and replaced."""
        for process in list(self.workers):
            if process.poll() is not None:
                self.workers.remove(process)
                self.report.worker_exits += 1
                self.start_worker()

    async def restart_server(self) -> None:
        # Workers in the middle of jobs see every call fail until the server is back.
        await anyio.to_thread.run_sync(self.server.kill)
        await anyio.sleep(0.3)
        await anyio.to_thread.run_sync(self.server.start)
        self.report.server_restarts += 1

    async def faults(self) -> None:
        """The fault schedule, spread over the configured duration."""
        duration = self.config.duration
        once = {
            0.3: self.drop_connections,
            0.4: self.terminate_one,
            0.5: self.restart_server,
            0.7: self.drop_connections,
            0.8: self.out_of_memory,
        }
        began = anyio.current_time()
        while (elapsed := anyio.current_time() - began) < duration:
            for share in sorted(once):
                if elapsed >= share * duration:
                    await once.pop(share)()
            self.count_exits()
            self.kill_one()
            await anyio.sleep(self.config.kill_every * self.random.uniform(0.7, 1.3))

    def stop_all(self) -> None:
        for process in self.workers:
            process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def produce(config: ChaosConfig, queue: qa.Queue, chaos: Chaos) -> None:
    """Enqueue every job over the first 60 % of the run, in batches, through the faults."""
    _, work, doomed = build_queue(chaos.server.url, chaos.name)
    rng = random.Random(config.seed)
    specs: list[qa.JobSpec[None]] = []
    for i in range(config.jobs):
        delay = rng.uniform(0.1, 3.0) if rng.random() < config.delayed_share else None
        ms = rng.randint(1, config.max_job_ms)
        specs.append(work.options(job_id=f"w{i}", delay=delay).call(ms))
    specs.extend(doomed.options(job_id=f"d{i}").call() for i in range(config.doomed))
    rng.shuffle(specs)
    batches = 30
    size = -(-len(specs) // batches)
    for start in range(0, len(specs), size):
        batch = specs[start : start + size]
        with anyio.fail_after(60):
            while True:
                try:
                    # Ids are fixed: a repeat of a batch that did land enqueues nothing twice.
                    await queue.enqueue_many(batch)
                    break
                except qa.BrokerError:  # unreachable, or refused while out of memory
                    await anyio.sleep(0.1)
        await anyio.sleep(config.duration * 0.6 / batches)


async def wait_drained(queue: qa.Queue, total: int, timeout: float) -> None:
    with anyio.move_on_after(timeout):
        while True:
            try:
                s = await queue.stats()
                if s.processed + s.dead >= total and not (s.ready or s.scheduled or s.active):
                    return
            except qa.BrokerError:
                pass
            await anyio.sleep(0.2)


async def job_states(
    queue: qa.Queue, job_ids: list[str]
) -> tuple[dict[str, str], dict[str, float]]:
    """Each job's state as Redis holds it ("missing" if it holds none; "ready" for a fresh
    record, a job no worker took yet), and when each job with a job hash became ready
    (epoch seconds): the accounting of a run."""
    keys = queue._broker.keys
    async with queue.client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), ["state", "enqueued", "due"])
        pipe.hmget(keys.fresh, job_ids)
        *rows, fresh = await pipe.execute()
    states = {}
    ready_at = {}
    for job_id, (state, enqueued, due), record in zip(job_ids, rows, fresh, strict=True):
        states[job_id] = state.decode() if state else "ready" if record else "missing"
        if enqueued:
            ready_at[job_id] = int(due or enqueued) / 1000
    return states, ready_at


def execution_starts(entries: set[bytes]) -> dict[str, list[tuple[float, int]]]:
    """The runs set's records: per job, when each execution started and in which process."""
    runs: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for raw in entries:
        job_id, pid, at, _ = raw.decode().split()
        runs[job_id].append((float(at), int(pid)))
    return runs


async def examine(config: ChaosConfig, queue: qa.Queue, chaos: Chaos) -> None:
    """Fill the report from what Redis holds and the execution records."""
    report = chaos.report
    work_ids = [f"w{i}" for i in range(config.jobs)]
    doomed_ids = {f"d{i}" for i in range(config.doomed)}
    states, ready_at = await job_states(queue, [*work_ids, *sorted(doomed_ids)])
    report.done = sum(states[j] == "done" for j in work_ids)
    report.lost = [j for j in work_ids if states[j] != "done"]
    report.lost += [j for j in sorted(doomed_ids) if states[j] != "dead"]

    stats = await queue.stats()
    report.completion_records = stats.processed
    report.duplicate_completions = stats.processed - report.done
    report.stuck = {"ready": stats.ready, "scheduled": stats.scheduled, "active": stats.active}
    dead = {m.decode() for m in await queue.client.zrange(queue._broker.keys.dead, 0, -1)}
    report.unexpected_dead = sorted(dead - doomed_ids)

    # A complete call with a token that is not the job's current one must change nothing.
    probe = work_ids[0]
    before = await queue.client.hgetall(queue._broker.keys.job(probe))
    flags = await queue._broker.scripts.complete([probe, "stale:token", b'"late"', 60_000])
    after = await queue.client.hgetall(queue._broker.keys.job(probe))
    report.stale_token_refused = flags == [0] and before == after

    runs = execution_starts(await queue.client.smembers(runs_key(queue)))
    report.executions = sum(len(r) for r in runs.values())
    for job_id, executions in runs.items():
        executions.sort()
        report.extra_executions += len(executions) - 1
        for (_, pid), (next_at, _) in itertools.pairwise(executions):
            stopped = chaos.stopped_at.get(pid)
            if stopped is None or stopped > next_at:
                report.unexplained_extra.append(job_id)
            else:
                report.max_recovery_s = max(report.max_recovery_s, next_at - stopped)
        if job_id in ready_at:
            wait = executions[0][0] - ready_at[job_id]
            report.max_wait_to_start_s = max(report.max_wait_to_start_s, wait)
    report.max_recovery_s = round(report.max_recovery_s, 3)
    report.max_wait_to_start_s = round(report.max_wait_to_start_s, 3)


async def run_chaos(config: ChaosConfig) -> ChaosReport:
    """One whole chaos run on a private server of its own."""
    name = f"chaos-{os.getpid()}-{random.Random().randrange(10**6)}"
    began = time.perf_counter()
    with EmbeddedServer(appendonly=True) as server:
        chaos = Chaos(config, server, name)
        queue = qa.Queue(server.url, name=name)
        try:
            for _ in range(config.workers):
                chaos.start_worker()
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce, config, queue, chaos)
                tg.start_soon(chaos.faults)
            await wait_drained(queue, config.jobs + config.doomed, config.drain_timeout)
            chaos.count_exits()
            await examine(config, queue, chaos)
        finally:
            chaos.stop_all()
            await queue.close()
    chaos.report.seconds = round(time.perf_counter() - began, 1)
    return chaos.report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=240.0, help="seconds of faults")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    config = ChaosConfig(
        jobs=args.jobs,
        doomed=max(1, args.jobs // 100),
        duration=args.duration,
        workers=args.workers,
        drain_timeout=120.0,
        seed=args.seed,
    )
    report = anyio.run(run_chaos, config)
    figures = asdict(report)
    for name in ("lost", "unexplained_extra", "unexpected_dead"):
        figures[name] = len(figures[name])
    print(json.dumps(figures), flush=True)
    for problem in report.problems():
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
