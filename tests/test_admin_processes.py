"""Admin repairs while worker processes run: every job runs once or is removed, never both."""

from __future__ import annotations

import subprocess

import anyio
import pytest

import queue_async as qa
from tests.test_processes import app_env, app_queue, runs_of, start_worker

pytestmark = pytest.mark.anyio
__all__ = ["app_env", "app_queue"]  # fixtures, used by name


async def _workers_up(queue: qa.Queue, count: int) -> None:
    key = f"{queue._broker.keys.prefix}test:workers-up"
    with anyio.fail_after(20):
        while await queue.client.llen(key) < count:
            await anyio.sleep(0.02)


async def _settled(queue: qa.Queue) -> qa.QueueStats:
    with anyio.fail_after(30):
        while True:
            stats = await queue.stats()
            if stats.ready == 0 and stats.leased == 0:
                return stats
            await anyio.sleep(0.05)


@pytest.mark.slow
async def test_purge_while_two_worker_processes_lease(
    app_queue: qa.Queue, app_env: dict[str, str], spawn: list[subprocess.Popen[bytes]]
) -> None:
    start_worker(app_env, spawn, "5.0")
    start_worker(app_env, spawn, "5.0")
    await _workers_up(app_queue, 2)
    handles = await app_queue.enqueue_many([app_queue.call("apps.record") for _ in range(3000)])
    purged = await qa.Admin(app_queue).purge("ready")
    await _settled(app_queue)
    runs = await runs_of(app_queue)
    ran = {run.split(":")[0] for run in runs}
    assert len(runs) == len(ran), "a job ran twice"
    assert ran <= {h.id for h in handles}
    assert purged + len(ran) == 3000
    assert purged > 0  # the workers did not take everything before the purge began


@pytest.mark.slow
async def test_retry_dead_while_two_worker_processes_run_them(
    app_queue: qa.Queue, app_env: dict[str, str], spawn: list[subprocess.Popen[bytes]]
) -> None:
    # Dead jobs of apps.record, made through the real path: a worker whose twin of the task
    # fails them (another Queue object on the same queue, with its own registry).
    async with qa.Queue(app_env["REDIS_URL"], name=app_queue.name) as maker:

        @maker.task(name="apps.record", retries=0)
        async def failing() -> None:
            raise qa.Fatal("made dead for the test")

        handles = await maker.enqueue_many([failing.call() for _ in range(500)])
        await qa.Worker(maker, lease=5, heartbeat=1).run(burst=True, handle_signals=False)
    admin = qa.Admin(app_queue)
    assert (await admin.stats()).dead == 500
    start_worker(app_env, spawn, "5.0")
    start_worker(app_env, spawn, "5.0")
    await _workers_up(app_queue, 2)
    assert await admin.retry_dead(limit=10_000) == 500
    stats = await _settled(app_queue)
    runs = await runs_of(app_queue)
    assert sorted(run.split(":")[0] for run in runs) == sorted(h.id for h in handles)
    assert all(run.endswith(":2") for run in runs)  # the retried try counts on
    assert stats.dead == 0
