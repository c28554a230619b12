"""Faults around a worker process: the server going away, a stall past the lease, and what
a long run leaves behind in Redis."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator

import anyio
import pytest

import queue_async as qa
from queue_async.embedded import EmbeddedServer
from tests.conftest import unique_name
from tests.helpers import FAST
from tests.test_processes import ROOT, runs_of, start_worker, wait_for_runs

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def private_env(private_server: EmbeddedServer) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": private_server.url,
        "QA_QUEUE": unique_name(),
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
async def private_app_queue(private_env: dict[str, str]) -> AsyncIterator[qa.Queue]:
    queue = qa.Queue(private_env["REDIS_URL"], name=private_env["QA_QUEUE"])
    yield queue
    await queue.close()


async def worker_is_up(queue: qa.Queue) -> None:
    with anyio.fail_after(20):
        await queue.client.blpop([f"{queue._broker.keys.prefix}test:workers-up"], timeout=20)


def stop_and_read_log(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    return err.decode()


async def test_worker_process_rides_out_an_outage_without_spinning_and_loses_no_job(
    private_server: EmbeddedServer,
    private_app_queue: qa.Queue,
    private_env: dict[str, str],
    spawn: list[subprocess.Popen[bytes]],
) -> None:
    queue = private_app_queue
    proc = start_worker(private_env, spawn, "1.0")
    await worker_is_up(queue)
    handle = await queue.enqueue("apps.record", hold=1.0)  # runs for 1 s on its first try
    await wait_for_runs(queue, 1)

    used_before = cpu_seconds(proc.pid)
    private_server.kill()
    await anyio.sleep(3.0)  # the outage: three times the lease, with one job held
    used = cpu_seconds(proc.pid) - used_before
    assert proc.poll() is None  # still running...
    assert used < 0.6  # ...and backing off, not spinning (3 s of outage, under 20 % of a core)

    await anyio.to_thread.run_sync(private_server.start)
    # The held job either completes under its lease or is recovered and runs again.
    assert await handle.result(timeout=20) == handle.id
    assert (await runs_of(queue))[0] == f"{handle.id}:1"
    # The same process keeps working.
    assert await (await queue.enqueue("apps.add", 2, 3)).result(timeout=10) == 5
    stats = await queue.stats()
    assert (stats.processed, stats.ready, stats.active, stats.dead) == (2, 0, 0, 0)

    log = stop_and_read_log(proc)
    assert "Redis unreachable" in log
    assert "backoff up to 1.0s" in log or "backoff up to 5.0s" in log
    assert "Redis is reachable again" in log


async def test_worker_stalled_past_its_lease_runs_the_job_again_but_is_recorded_once(
    private_app_queue: qa.Queue,
    private_env: dict[str, str],
    spawn: list[subprocess.Popen[bytes]],
) -> None:
    queue = private_app_queue
    queue.task(name="apps.record", retries=3)(_record_without_hold)
    stalled = start_worker(private_env, spawn, "1.0")
    await worker_is_up(queue)
    handle = await queue.enqueue("apps.record", hold=1.5)
    await wait_for_runs(queue, 1)
    stalled.send_signal(signal.SIGSTOP)  # as a network stall: no heartbeat, no calls

    # After the 1 s lease another worker recovers the job and completes it first.
    async with qa.Worker(queue, **FAST):
        assert await handle.result(timeout=15) == handle.id
    first = await handle.info()
    assert first.status is qa.JobStatus.DONE and first.attempts == 2

    # The stalled worker wakes up and finishes its own run; SIGTERM lets it finish first.
    stalled.send_signal(signal.SIGCONT)
    log = stop_and_read_log(stalled)
    assert "this result was not recorded" in log
    assert await runs_of(queue) == [f"{handle.id}:1", f"{handle.id}:2"]
    last = await handle.info()
    assert (last.finished_at, last.attempts, last.worker) == (
        first.finished_at,
        first.attempts,
        first.worker,
    )
    assert (await queue.stats()).processed == 1


async def _record_without_hold(ctx: qa.JobContext, hold: float = 0.0) -> str:
    await ctx.queue.client.rpush(
        f"{ctx.queue._broker.keys.prefix}test:runs", f"{ctx.job_id}:{ctx.attempt}"
    )
    return ctx.job_id


@pytest.mark.timeout(180)
async def test_completed_jobs_leave_no_keys_once_their_results_expire(queue: qa.Queue) -> None:
    @queue.task(keep_result=1)
    async def noop(i: int) -> int:
        return i

    jobs = 100_000
    for start in range(0, jobs, 20_000):
        await queue.enqueue_many([noop.call(i) for i in range(start, start + 20_000)])
    worker = qa.Worker(queue, **{**FAST, "concurrency": 200})
    with anyio.fail_after(150):
        await worker.run(burst=True, handle_signals=False)
    assert (await queue.stats()).processed == jobs

    # Every job hash expires one second after its job finished, by the server's clock.
    seconds, _ = await queue.client.time()
    with anyio.fail_after(10):
        while (await queue.client.time())[0] < seconds + 2:
            await anyio.sleep(0.1)
    # SCAN expires the keys it meets, so this counts what is really left.
    left = {
        key.decode() async for key in queue.client.scan_iter(f"{queue._broker.keys.prefix}*", 1000)
    }
    k = queue._broker.keys
    assert left <= {k.meta, k.seq, k.wake, k.workers, k.idle, k.entry}
