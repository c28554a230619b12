"""A master of the cluster killed (SIGKILL) mid-run, its replica taking over.

Producers enqueue single jobs with fixed ids (repeating an id after an error, as the chaos
run's producer does) while a worker processes them; the replica of the queue's master falls
behind for a moment (its link cut for ``LAG`` s, as a slow or broken link would), the
master is killed (SIGKILL) in that moment, and restarted once its replica has been
promoted (it comes back as the new master's replica: with one replica per master, that is
what lets ``WAIT 1`` be answered again).
The accounting is the chaos run's (tests/chaos/driver.py): the state Redis holds for each
job that was acknowledged to its producer.

With ``durability`` on, every acknowledged job ends done. With it off, a job acknowledged
in the moment before the kill may be gone from the promoted replica: the test asserts only
that producers and the worker go on, and prints how many were lost.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field

import anyio
import pytest
import redis
import redis.asyncio

import queue_async as qa
from tests.chaos.app import SETTINGS, build_queue, runs_key
from tests.chaos.driver import execution_starts, job_states
from tests.cluster.conftest import LocalCluster
from tests.conftest import unique_name
from tests.test_durability import silenced

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SHORT = qa.Durability(replicas=1, timeout=0.3)
PRODUCERS = 4
LAG = 0.3
BEFORE_KILL = 300  # jobs done before the kill
AFTER_FAILOVER = 300  # jobs acknowledged after the kill, to show producers go on


@dataclass
class FailoverRun:
    durability: bool
    acknowledged: int = 0
    done: int = 0
    lost: list[str] = field(default_factory=list)
    """Acknowledged jobs that are not done at the end (gone with the killed master)."""
    enqueue_errors: int = 0
    not_replicated: int = 0
    promoted_after_s: float = 0.0
    """From the kill to the replica's promotion (as CLUSTER SLOTS shows it)."""
    processing_gap_s: float = 0.0
    """The longest pause between job starts across the kill: what the failover costs the
    worker."""
    acknowledgement_gap_s: float = 0.0
    """The longest pause between acknowledged enqueues across the kill."""


def _slot_master_port(port: int, key: str) -> int:
    with redis.RedisCluster(host="127.0.0.1", port=port) as probe:
        node = probe.get_node_from_key(key)
        assert node is not None
        return int(node.port)


def _queue_name_away_from(cluster: LocalCluster) -> tuple[str, int]:
    """A queue name whose master is not the node the URL names (the clients' way in)."""
    while True:
        name = unique_name()
        port = _slot_master_port(cluster.ports[0], f"qa:{{{name}}}:ready")
        if port != cluster.ports[0]:
            return name, port


def _longest_gap(times: list[float], around: float) -> float:
    times = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times) if b > around - 5 and a < around + 60]
    return round(max(gaps, default=0.0), 3)


@contextlib.asynccontextmanager
async def _replica_cut_off(
    master: int, replica: subprocess.Popen[bytes], seconds: float
) -> AsyncIterator[None]:
    """The master's replica cut off for ``seconds``, then the body: frozen (SIGSTOP), so
    that it cannot reconnect, and its link closed by the master, so that nothing the master
    takes meanwhile reaches it. The master goes on taking writes alone, as over a broken
    link; the replica is thawed after the body."""
    async with redis.asyncio.Redis(port=master) as node:
        with silenced(replica):
            await node.execute_command("CLIENT", "KILL", "TYPE", "replica")
            await node.aclose()
            await anyio.sleep(seconds)
            yield


async def _until(check: Callable[[], bool], seconds: float) -> None:
    with anyio.fail_after(seconds):
        while not check():
            await anyio.sleep(0.02)


async def run_failover(cluster: LocalCluster, durability: qa.Durability | None) -> FailoverRun:
    name, master_port = _queue_name_away_from(cluster)
    queue, work, _ = build_queue(cluster.url, name, durability)
    report = FailoverRun(durability=durability is not None)
    acknowledged: dict[str, float] = {}
    started: list[float] = []

    class Starts:
        def job_started(self, ctx: qa.JobContext, waited: float) -> None:
            started.append(time.time())

        def job_ended(
            self, ctx: qa.JobContext, outcome: str, duration: float, timed_out: bool
        ) -> None:
            return None

    worker = qa.Worker(queue, settings=SETTINGS, observers=[Starts()])
    next_id = iter(range(10**6))
    producing = True

    async def produce() -> None:
        while producing:
            job_id = f"w{next(next_id)}"
            with anyio.fail_after(60):
                while True:
                    try:
                        await work.options(job_id=job_id).enqueue(5)
                        break
                    except qa.NotReplicated:
                        report.not_replicated += 1  # on the master; repeat to wait again
                    except qa.BrokerError:
                        report.enqueue_errors += 1
                        await anyio.sleep(0.05)
            acknowledged[job_id] = time.time()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: worker.run(handle_signals=False))
            for _ in range(PRODUCERS):
                tg.start_soon(produce)
            await _until(lambda: len(started) >= BEFORE_KILL, 30)

            # The replica falls behind (its link cut for LAG s, as a slow or broken link
            # would), and the master dies in that moment.
            killed = cluster.process_on(master_port)
            replica = cluster.process_on(cluster.replica_of(master_port))
            async with _replica_cut_off(master_port, replica, LAG):
                killed.kill()
                killed.wait()
                killed_at = time.time()
            at_kill = len(acknowledged)
            await anyio.to_thread.run_sync(cluster.wait_promoted, master_port)
            report.promoted_after_s = round(time.time() - killed_at, 3)
            # Back as the new master's replica (its nodes.conf says it lost the slot).
            await anyio.to_thread.run_sync(cluster.restart, master_port)

            await _until(lambda: len(acknowledged) >= at_kill + AFTER_FAILOVER, 60)
            producing = False
            ids = sorted(acknowledged)
            with anyio.fail_after(60):
                while True:
                    states, _ = await job_states(queue, ids)
                    settled = [s for s in states.values() if s in ("done", "missing")]
                    if len(settled) == len(ids):
                        break
                    await anyio.sleep(0.2)
            worker.stop()
        runs = execution_starts(await queue.client.smembers(runs_key(queue)))
    finally:
        await queue.close()
    report.acknowledged = len(ids)
    report.done = sum(state == "done" for state in states.values())
    report.lost = sorted(job_id for job_id, state in states.items() if state != "done")
    assert runs, "the jobs left no execution records"
    report.processing_gap_s = _longest_gap(started, killed_at)
    report.acknowledgement_gap_s = _longest_gap(list(acknowledged.values()), killed_at)
    figures = {**asdict(report), "lost": len(report.lost)}
    if path := os.environ.get("QA_FAILOVER_FIGURES"):
        async with await anyio.open_file(path, "a") as out:
            await out.write(json.dumps(figures) + "\n")
    return report


@pytest.mark.timeout(150)
async def test_with_durability_no_acknowledged_job_is_lost_when_a_master_dies(
    replicated_cluster: LocalCluster,
) -> None:
    report = await run_failover(replicated_cluster, qa.Durability(replicas=1, timeout=0.5))

    assert report.lost == []
    assert report.done == report.acknowledged >= BEFORE_KILL + AFTER_FAILOVER


@pytest.mark.timeout(150)
async def test_without_durability_producers_and_workers_go_on_when_a_master_dies(
    replicated_cluster: LocalCluster,
) -> None:
    report = await run_failover(replicated_cluster, None)

    # Asynchronous replication promises nothing about the last writes before the kill:
    # only that the queue goes on (the figure of lost jobs is printed).
    assert report.acknowledged >= BEFORE_KILL + AFTER_FAILOVER
    assert report.done >= report.acknowledged - len(report.lost)
    assert report.not_replicated == 0


async def test_durable_writes_on_a_cluster_are_on_the_replica_of_their_master(
    replicated_cluster: LocalCluster,
) -> None:
    name, master_port = _queue_name_away_from(replicated_cluster)
    durability = qa.Durability(replicas=1, timeout=2.0)
    queue, _, _ = build_queue(replicated_cluster.url, name, durability)
    replica_port = replicated_cluster.replica_of(master_port)
    view = qa.Queue(f"redis://127.0.0.1:{replica_port}/0", name=name)
    try:
        one = await queue.enqueue("chaos.work", 1)
        many = await queue.enqueue_many(queue.call("chaos.work", 1) for _ in range(1500))
        # Read at once from the replica, without READONLY's redirects: a plain client.
        await view.client.execute_command("READONLY")
        fresh = view._broker.keys.fresh
        assert await view.client.hexists(fresh, one.id)
        assert await view.client.hlen(fresh) == 1 + len(many)

        # WAIT went to the write's own master: with that master's replica frozen, the
        # enqueue is not confirmed (a WAIT sent to any other node would be, at once).
        short = qa.Queue(replicated_cluster.url, name=name, durability=SHORT)
        try:
            with silenced(replicated_cluster.process_on(replica_port)):
                with pytest.raises(qa.NotReplicated) as raised:
                    await short.enqueue("chaos.work", 1)
                with pytest.raises(qa.NotReplicated):
                    await short.enqueue_many(short.call("chaos.work", 1) for _ in range(1500))
            assert raised.value.replicas == 0
        finally:
            await short.close()
    finally:
        await queue.close()
        await view.close()
