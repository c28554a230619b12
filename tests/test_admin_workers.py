"""Admin.workers(): the live workers, from their heartbeats, with what each runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import anyio
import pytest

import queue_async as qa
from tests.helpers import FAST
from tests.test_processes import app_env, app_queue, start_worker  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio


async def wait_for_workers(admin: qa.Admin, count: int, limit: float = 15) -> list[qa.WorkerInfo]:
    with anyio.fail_after(limit):
        while len(workers := await admin.workers()) != count or (
            count and not all(w.jobs for w in workers)
        ):
            await anyio.sleep(0.05)
    return workers


@pytest.mark.slow
async def test_a_worker_process_is_listed_with_its_job_then_drops_out_when_killed(
    app_queue: qa.Queue,  # noqa: F811
    app_env: dict[str, str],  # noqa: F811
    spawn: list[subprocess.Popen[bytes]],
) -> None:
    admin = qa.Admin(app_queue)
    handle = await app_queue.enqueue("apps.record", hold=30)
    proc = start_worker(app_env, spawn)

    (worker,) = await wait_for_workers(admin, 1)

    assert worker.pid == proc.pid
    assert worker.host == socket.gethostname()
    assert worker.queue == app_queue.name
    assert worker.concurrency == 10
    assert [(j.id, j.task) for j in worker.jobs] == [(handle.id, "apps.record")]
    assert worker.jobs[0].started_at is not None
    assert worker.last_seen is not None and worker.last_seen >= worker.started_at
    assert (worker.processed, worker.failed, worker.prefetched) == (0, 0, 0)
    assert (await admin.stats()).active == 1

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Its heartbeat lapses (TTL: three heartbeats of 0.25 s): no longer listed.
    await wait_for_workers(admin, 0)


async def test_a_job_s_check_in_and_the_worker_s_counts_are_shown(queue: qa.Queue) -> None:
    checked = anyio.Event()
    release = anyio.Event()

    @queue.task(name="report")
    async def report(ctx: qa.JobContext) -> None:
        await ctx.checkin("row 3 of 10", progress=0.3)
        checked.set()
        await release.wait()

    @queue.task(name="broken", retries=0)
    async def broken() -> None:
        raise RuntimeError("no")

    await broken.enqueue()
    admin = qa.Admin(queue)
    async with qa.Worker(queue, concurrency=4, **FAST) as running:
        with anyio.fail_after(10):
            while (await queue.stats()).dead < 1:
                await anyio.sleep(0.02)
        job = await report.enqueue()
        with anyio.fail_after(10):
            await checked.wait()
            while not (listed := await admin.workers()) or not listed[0].jobs:
                await anyio.sleep(0.02)
            while listed[0].failed < 1:
                await anyio.sleep(0.02)
                listed = await admin.workers()
        (info,) = listed
        assert info.id == running.id
        (shown,) = info.jobs
        assert (shown.id, shown.task, shown.checkin, shown.progress) == (
            job.id,
            "report",
            "row 3 of 10",
            0.3,
        )
        assert shown.checkin_at is not None
        assert (info.processed, info.failed) == (1, 1)
        release.set()
    assert await admin.workers() == []  # deregistered as it stopped


async def test_heartbeats_that_are_not_ours_are_skipped(queue: qa.Queue) -> None:
    keys = queue._broker.keys
    await queue._broker.scripts.extend(60_000, "odd", b"not json", 60_000, [])
    await queue.client.zadd(keys.workers, {"expired": 1})

    assert await qa.Admin(queue).workers() == []
