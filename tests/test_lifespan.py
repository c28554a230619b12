"""``async with Worker(...)`` as a web app's lifespan runs it: startup, errors, health, stop."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import pytest

import queue_async as qa
from queue_async.embedded import EmbeddedServer
from tests.conftest import unique_name
from tests.helpers import FAST

pytestmark = pytest.mark.anyio


class DatabaseDown(Exception):
    pass


async def test_async_with_returns_only_after_the_startup_hooks_ran(queue: qa.Queue) -> None:
    @queue.on_startup
    async def slow_start(state: dict[str, Any]) -> None:
        await anyio.sleep(0.3)
        state["db"] = "pool"

    async with qa.Worker(queue, **FAST) as worker:
        assert worker.state["db"] == "pool"
        assert worker.running


async def test_a_failing_startup_hook_raises_its_own_error_and_runs_the_shutdown_hooks(
    queue: qa.Queue,
) -> None:
    stopped: list[str] = []

    @queue.on_startup
    async def connect(state: dict[str, Any]) -> None:
        raise DatabaseDown("database is down")

    @queue.on_shutdown
    async def close(state: dict[str, Any]) -> None:
        stopped.append("closed")

    worker = qa.Worker(queue, **FAST)
    with pytest.raises(DatabaseDown, match="database is down"):
        async with worker:
            pytest.fail("the body must not run")
    assert stopped == ["closed"]
    assert not worker.running and worker.error is not None


async def test_a_failing_startup_hook_raises_from_run_as_itself(queue: qa.Queue) -> None:
    @queue.on_startup
    async def connect(state: dict[str, Any]) -> None:
        raise DatabaseDown("nope")

    with pytest.raises(DatabaseDown):
        await qa.Worker(queue, **FAST).run(burst=True, handle_signals=False)


async def test_an_exception_in_the_body_comes_out_as_itself(queue: qa.Queue) -> None:
    @queue.task
    async def slow() -> None:
        await anyio.sleep(5)

    handle = await slow.enqueue()
    with pytest.raises(qa.JobTimeout):
        async with qa.Worker(queue, **FAST):
            await handle.result(timeout=0.2)
    # The worker still stopped cleanly: the interrupted job went back to the queue.
    assert (await handle.info()).status is qa.JobStatus.READY


async def test_a_worker_that_dies_in_the_background_shows_it_and_raises_at_exit(
    queue: qa.Queue,
) -> None:
    worker = qa.Worker(queue, **FAST)

    async def broken_heartbeat(lane: object) -> None:
        raise RuntimeError("heartbeat bug")

    worker._heartbeat = broken_heartbeat  # type: ignore[method-assign]
    seen: list[BaseException | None] = []

    async def serve() -> None:
        async with worker:
            with anyio.fail_after(5):
                while worker.running:
                    await anyio.sleep(0.01)
            seen.append(worker.error)

    with pytest.raises(RuntimeError, match="heartbeat bug"):
        await serve()
    assert isinstance(seen[0], RuntimeError)


async def test_cron_stops_firing_once_shutdown_begins(queue: qa.Queue) -> None:
    ticks: list[float] = []

    @queue.cron("* * * * * *")  # every second
    async def tick() -> None:
        ticks.append(anyio.current_time())

    @queue.task
    async def long_job() -> None:
        await anyio.sleep(2.5)

    await long_job.enqueue()
    worker = qa.Worker(queue, **{**FAST, "shutdown_grace": 5})
    async with worker:
        with anyio.fail_after(5):
            while not ticks:
                await anyio.sleep(0.01)
        worker.stop()
        stopped_at = anyio.current_time()
        # The long job keeps the worker in its grace period for ~2 s: no tick is enqueued.
    enqueued_after = await queue.stats()
    assert enqueued_after.ready + enqueued_after.scheduled == 0
    assert all(t < stopped_at for t in ticks)


async def test_burst_worker_rides_out_a_server_restart(private_server: EmbeddedServer) -> None:
    async with qa.Queue(private_server.url, name=unique_name()) as queue:

        @queue.task
        async def later() -> str:
            return "ok"

        handle = await later.options(delay=1.5).enqueue()
        worker = qa.Worker(queue, **{**FAST, "reconnect_max": 0.2})
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, burst=True, handle_signals=False))
            await anyio.sleep(0.3)  # the burst worker waits for the delayed job
            await anyio.to_thread.run_sync(private_server.restart)
        assert await handle.result(timeout=5) == "ok"


async def test_cancelling_run_hands_back_every_job_and_deregisters(queue: qa.Queue) -> None:
    @queue.task
    async def long() -> None:
        await anyio.sleep(30)

    await queue.enqueue_many([long.call() for _ in range(100)])
    worker = qa.Worker(queue, **FAST)
    with anyio.move_on_after(1.0):
        await worker.run(handle_signals=False)
    stats = await queue.stats()
    assert (stats.active, stats.ready, stats.workers) == (0, 100, 0)


async def test_a_stop_while_a_lease_call_is_in_flight_leaves_no_job_active(
    queue: qa.Queue,
) -> None:
    @queue.task
    async def quick() -> None:
        await anyio.sleep(0.5)

    await queue.enqueue_many([quick.call() for _ in range(10)])
    worker = qa.Worker(queue, **{**FAST, "shutdown_grace": 0})
    lane = worker._lanes[0]
    real_lease = lane.lease

    async def slow_lease(*args: Any) -> Any:
        # The server has leased the jobs; the stop arrives while the reply is on its way.
        reply = await real_lease(*args)
        worker.stop()
        await anyio.sleep(0.2)
        return reply

    lane.lease = slow_lease  # type: ignore[method-assign]
    with anyio.fail_after(10):
        await worker.run(handle_signals=False)
    stats = await queue.stats()
    assert (stats.active, stats.ready) == (0, 10)
