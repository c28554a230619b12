"""The core life cycle: enqueue, lease, run, complete, retry, results, cancel."""

from __future__ import annotations

import os
import re
import threading
from datetime import UTC, datetime, timedelta

import anyio
import pytest
import redis.asyncio

import queue_async as qa
from queue_async.producer.encode import new_job_id
from tests.conftest import unique_name
from tests.helpers import FAST, drain, ready_ids

pytestmark = pytest.mark.anyio


async def test_enqueued_job_runs_and_result_is_returned(queue: qa.Queue) -> None:
    @queue.task
    async def add(ctx: qa.JobContext, a: int, b: int) -> int:
        return a + b

    handle = await add.enqueue(1, 2)
    assert await handle.status() is qa.JobStatus.READY
    await drain(queue)
    assert await handle.result(timeout=5) == 3
    info = await handle.info()
    assert info.status is qa.JobStatus.DONE
    assert (info.args, info.kwargs, info.attempts, info.result) == ([1, 2], {}, 1, 3)
    assert info.enqueued_at is not None and info.started_at is not None
    assert info.finished_at is not None and info.finished_at >= info.started_at


async def test_a_client_passed_in_lends_its_server(client: redis.asyncio.Redis) -> None:
    # The fixture's client: of one server here, a RedisCluster in tests/cluster/, a
    # Sentinel(...).master_for(...) client in tests/sentinel/.
    async with qa.Queue(client, name=unique_name()) as q:

        @q.task(name="echo")
        async def echo(x: int) -> int:
            return x

        handle = await q.enqueue("echo", 7)
        await drain(q)
        assert await handle.result(timeout=5) == 7


async def test_task_name_defaults_to_module_and_qualname(queue: qa.Queue) -> None:
    @queue.task
    async def named() -> None: ...

    assert named.name == f"{__name__}.test_task_name_defaults_to_module_and_qualname.<locals>.named"
    assert queue.tasks[named.name] is named


async def test_handler_without_context_and_sync_handler_in_a_thread(queue: qa.Queue) -> None:
    threads: list[str] = []

    @queue.task
    async def plain(a: int) -> int:
        return a * 2

    @queue.task
    def blocking(ctx: qa.JobContext, a: int) -> str:
        threads.append(threading.current_thread().name)
        return f"{ctx.attempt}:{a}"

    h1, h2 = await plain.enqueue(21), await blocking.enqueue(a=7)
    await drain(queue)
    assert await h1.result(timeout=5) == 42
    assert await h2.result(timeout=5) == "1:7"
    assert threads and threads[0] != threading.main_thread().name


async def test_context_carries_job_and_startup_state(queue: qa.Queue) -> None:
    seen: dict[str, object] = {}
    stopped: list[bool] = []

    @queue.on_startup
    async def startup(state: dict[str, object]) -> None:
        state["db"] = "pool"

    @queue.on_shutdown
    async def shutdown(state: dict[str, object]) -> None:
        stopped.append(state["db"] == "pool")

    @queue.task
    async def look(ctx: qa.JobContext) -> None:
        seen.update(
            id=ctx.job_id,
            task=ctx.task,
            attempt=ctx.attempt,
            db=ctx.state["db"],
            queue=ctx.queue,
            enqueued=ctx.enqueued_at,
        )

    handle = await look.enqueue()
    worker = await drain(queue)
    assert seen["id"] == handle.id and seen["task"] == look.name and seen["attempt"] == 1
    assert seen["db"] == "pool" and seen["queue"] is queue
    assert isinstance(seen["enqueued"], datetime)
    assert stopped == [True]
    assert worker.state == {"db": "pool"}


async def test_enqueue_by_name_runs_the_registered_handler(queue: qa.Queue) -> None:
    @queue.task(name="math.mul")
    async def mul(a: int, b: int) -> int:
        return a * b

    handle = await queue.enqueue("math.mul", 6, b=7)
    await drain(queue)
    assert await handle.result(timeout=5) == 42


async def test_enqueue_many_enqueues_thousands_in_order(queue: qa.Queue) -> None:
    order: list[int] = []

    @queue.task
    async def note(i: int) -> int:
        order.append(i)
        return i

    handles = await queue.enqueue_many([note.call(i) for i in range(2500)])
    assert len(handles) == 2500 and len({h.id for h in handles}) == 2500
    assert (await queue.stats()).ready == 2500
    await drain(queue, concurrency=1)
    assert order == list(range(2500))
    assert await handles[-1].result(timeout=5) == 2499
    assert await queue.enqueue_many([]) == []


async def test_delayed_job_waits_for_its_time_then_runs_promptly(queue: qa.Queue) -> None:
    ran_at: list[float] = []

    @queue.task
    async def stamp() -> None:
        ran_at.append(anyio.current_time())

    start = anyio.current_time()
    handle = await stamp.options(delay=0.3).enqueue()
    assert await handle.status() is qa.JobStatus.SCHEDULED
    assert (await handle.info()).scheduled_for is not None
    async with qa.Worker(queue, **FAST):
        await handle.result(timeout=5)
    assert 0.29 <= ran_at[0] - start < 0.29 + 0.25


async def test_at_datetime_and_timedelta_delay(queue: qa.Queue) -> None:
    @queue.task
    async def noop() -> None: ...

    later = await noop.options(at=datetime.now(UTC) + timedelta(hours=1)).enqueue()
    soon = await noop.options(delay=timedelta(milliseconds=50)).enqueue()
    naive_past = await noop.options(at=datetime(2000, 1, 1)).enqueue()
    stats = await queue.stats()
    assert stats.scheduled == 2 and stats.ready == 1
    assert await naive_past.status() is qa.JobStatus.READY
    async with qa.Worker(queue, **FAST):
        await soon.result(timeout=5)
        await naive_past.result(timeout=5)
    assert await later.status() is qa.JobStatus.SCHEDULED


async def test_lower_priority_runs_first_and_fifo_within_priority(queue: qa.Queue) -> None:
    order: list[str] = []

    @queue.task
    async def note(tag: str) -> None:
        order.append(tag)

    await note.options(priority=5).enqueue("low-1")
    await note.options(priority=5).enqueue("low-2")
    await note.options(priority=-1).enqueue("urgent")
    await note.enqueue("normal")
    await drain(queue, concurrency=1)
    assert order == ["urgent", "normal", "low-1", "low-2"]


async def test_delayed_job_keeps_its_priority_when_it_comes_due(queue: qa.Queue) -> None:
    order: list[str] = []

    @queue.task
    async def note(tag: str) -> None:
        order.append(tag)

    await note.enqueue("normal-1")
    await note.enqueue("normal-2")
    delayed = await note.options(priority=-5, delay=0.05).enqueue("urgent-later")
    due = (await delayed.info()).scheduled_for
    assert due is not None
    with anyio.fail_after(5):  # wait on the server's clock, which decides what is due
        while datetime.fromtimestamp(sum(await _server_time(queue)), UTC) <= due:
            await anyio.sleep(0.01)
    await drain(queue, concurrency=1)
    assert order == ["urgent-later", "normal-1", "normal-2"]


async def _server_time(queue: qa.Queue) -> tuple[float, float]:
    seconds, micros = await queue.client.time()
    return seconds, micros / 1e6


async def test_explicit_job_id_is_enqueued_once(queue: qa.Queue) -> None:
    runs: list[int] = []

    @queue.task
    async def once(i: int) -> int:
        runs.append(i)
        return i

    first = await once.options(job_id="order-42").enqueue(1)
    second = await once.options(job_id="order-42").enqueue(2)
    assert first == second and first.id == "order-42"
    await drain(queue)
    assert runs == [1]
    assert await first.result(timeout=5) == 1


async def test_failing_job_is_retried_with_backoff_then_succeeds(queue: qa.Queue) -> None:
    attempts: list[int] = []

    @queue.task(retries=3, backoff_base=0.01, backoff_cap=0.05)
    async def flaky(ctx: qa.JobContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError(f"boom {ctx.attempt}")
        return "ok"

    handle = await flaky.enqueue()
    await drain(queue)
    assert attempts == [1, 2, 3]
    assert await handle.result(timeout=5) == "ok"
    stats = await queue.stats()
    assert (stats.retried, stats.processed, stats.dead) == (2, 1, 0)


async def test_job_out_of_tries_goes_to_dead_with_traceback(queue: qa.Queue) -> None:
    @queue.task(retries=1, backoff_base=0.01)
    async def broken() -> None:
        raise ValueError("bad row 7")

    handle = await broken.enqueue()
    await drain(queue)
    with pytest.raises(qa.JobFailed) as caught:
        await handle.result(timeout=5)
    assert caught.value.job_id == handle.id
    assert caught.value.error is not None and "ValueError: bad row 7" in caught.value.error
    assert "Traceback" in caught.value.error and "bad row 7" in str(caught.value)
    info = await handle.info()
    assert info.status is qa.JobStatus.DEAD and info.attempts == 2
    assert await queue.client.zscore(queue._broker.keys.dead, handle.id) is not None


async def test_retry_with_defer_schedules_the_next_try(queue: qa.Queue) -> None:
    @queue.task(retries=2)
    async def later(ctx: qa.JobContext) -> int:
        if ctx.attempt == 1:
            raise qa.Retry(defer=timedelta(hours=1))
        return ctx.attempt

    handle = await later.enqueue()
    async with qa.Worker(queue, **FAST):
        with anyio.fail_after(5):
            while await handle.status() is not qa.JobStatus.SCHEDULED:
                await anyio.sleep(0.01)
    info = await handle.info()
    assert info.scheduled_for is not None
    assert info.scheduled_for - datetime.now(UTC) > timedelta(minutes=59)
    assert info.error is not None and "Retry" in info.error


async def test_fatal_error_and_fatal_types_skip_remaining_tries(queue: qa.Queue) -> None:
    class Unrecoverable(Exception):
        pass

    @queue.task(retries=5)
    async def give_up() -> None:
        raise qa.Fatal("card declined")

    @queue.task(retries=5, fatal=[Unrecoverable])
    async def typed() -> None:
        raise Unrecoverable("nope")

    h1, h2 = await give_up.enqueue(), await typed.enqueue()
    await drain(queue)
    for handle in (h1, h2):
        info = await handle.info()
        assert info.status is qa.JobStatus.DEAD and info.attempts == 1


async def test_timeout_cancels_the_try_and_counts_as_failed(queue: qa.Queue) -> None:
    @queue.task(retries=1, timeout=0.1, backoff_base=0.01)
    async def slow() -> None:
        await anyio.sleep(30)

    handle = await slow.enqueue()
    with anyio.fail_after(5):
        await drain(queue)
    info = await handle.info()
    assert info.status is qa.JobStatus.DEAD and info.attempts == 2
    assert info.error is not None
    assert info.error.splitlines()[-1] == "JobTimeout: the try timed out after 0.1 s"


async def test_per_enqueue_options_override_task_options(queue: qa.Queue) -> None:
    @queue.task(retries=5, timeout=30)
    async def slow() -> None:
        await anyio.sleep(30)

    handle = await slow.options(retries=0, timeout=0.05).enqueue()
    await drain(queue)
    info = await handle.info()
    assert info.status is qa.JobStatus.DEAD and info.attempts == 1


async def test_keep_result_zero_stores_nothing(queue: qa.Queue) -> None:
    @queue.task(keep_result=0)
    async def quiet() -> int:
        return 1

    handle = await quiet.enqueue()
    await drain(queue)
    assert await handle.status() is None
    assert await queue.client.exists(queue._broker.keys.job(handle.id)) == 0


async def test_result_ttl_is_set_from_keep_result(queue: qa.Queue) -> None:
    @queue.task(keep_result=60)
    async def brief() -> int:
        return 1

    handle = await brief.options(keep_result=timedelta(seconds=5)).enqueue()
    other = await brief.enqueue()
    await drain(queue)
    assert 0 < await queue.client.pttl(queue._broker.keys.job(handle.id)) <= 5000
    assert 5000 < await queue.client.pttl(queue._broker.keys.job(other.id)) <= 60_000


async def test_result_waits_for_a_worker_started_later(queue: qa.Queue) -> None:
    @queue.task
    async def add(a: int, b: int) -> int:
        return a + b

    handle = await add.enqueue(2, 3)
    async with anyio.create_task_group() as tg:
        results: list[int] = []

        async def wait() -> None:
            results.append(await handle.result(timeout=10))

        tg.start_soon(wait)
        await anyio.sleep(0.1)
        assert results == []
        await drain(queue)
    assert results == [5]


async def test_cancelled_job_never_runs(queue: qa.Queue) -> None:
    runs: list[int] = []

    @queue.task
    async def work(i: int) -> None:
        runs.append(i)

    keep, drop, later = (
        await work.enqueue(1),
        await work.enqueue(2),
        await work.options(delay=60).enqueue(3),
    )
    assert await drop.cancel() is True
    assert await later.cancel() is True
    assert await drop.cancel() is False
    await drain(queue)
    assert runs == [1]
    assert await keep.cancel() is False
    assert await drop.status() is qa.JobStatus.CANCELLED
    with pytest.raises(qa.JobCancelled):
        await drop.result(timeout=1)
    assert await queue.job("never-existed").cancel() is False


async def test_background_worker_in_async_with(queue: qa.Queue) -> None:
    @queue.task
    async def echo(x: str) -> str:
        return x

    async with qa.Worker(queue, **FAST) as worker:
        assert await (await echo.enqueue("hi")).result(timeout=5) == "hi"
        beat = await queue.client.get(queue._broker.keys.worker(worker.id))
        assert beat is not None
        heartbeat = qa.WorkerHeartbeat.model_validate_json(beat)
        assert heartbeat.id == worker.id and heartbeat.concurrency == 100
    assert await queue.client.get(queue._broker.keys.worker(worker.id)) is None


async def test_worker_runs_only_once(queue: qa.Queue) -> None:
    worker = await drain(queue)
    with pytest.raises(RuntimeError, match="runs once"):
        await worker.run(burst=True)


async def test_concurrency_limits_jobs_running_at_once(queue: qa.Queue) -> None:
    running = 0
    peak = 0

    @queue.task
    async def hold() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01)
        running -= 1

    await queue.enqueue_many([hold.call() for _ in range(60)])
    await drain(queue, concurrency=7)
    assert peak == 7
    assert (await queue.stats()).processed == 60


async def test_heartbeat_extends_leases_of_long_jobs(queue: qa.Queue) -> None:
    @queue.task
    async def long() -> str:
        await anyio.sleep(1.5)
        return "done"

    handle = await long.enqueue()
    # The lease (0.6 s) is shorter than the job: only heartbeats keep it alive.
    await drain(queue, lease=0.6, heartbeat=0.15)
    info = await handle.info()
    assert info.status is qa.JobStatus.DONE and info.attempts == 1


async def test_graceful_stop_hands_unfinished_jobs_back_without_counting_them(
    queue: qa.Queue,
) -> None:
    started = anyio.Event()

    @queue.task
    async def stuck() -> None:
        started.set()
        await anyio.sleep(60)

    handle = await stuck.enqueue()
    worker = qa.Worker(queue, **{**FAST, "shutdown_grace": 0.1})
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await started.wait()
            worker.stop()
    info = await handle.info()
    assert info.status is qa.JobStatus.READY and info.attempts == 0
    assert await ready_ids(queue) == [handle.id]
    assert await queue.client.zcard(queue._broker.keys.active) == 0


async def test_queue_stats_count_each_state(queue: qa.Queue) -> None:
    @queue.task
    async def noop() -> None: ...

    await noop.enqueue()
    await noop.options(delay=60).enqueue()
    stats = await queue.stats()
    assert (stats.ready, stats.scheduled, stats.active, stats.dead) == (1, 1, 0, 0)
    assert stats.queue == queue.name


def test_job_ids_are_random_url_safe_and_not_shared_with_a_forked_child() -> None:
    ids = [new_job_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", job_id) for job_id in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child takes the id its parent would take next, were the pool shared
        os.write(write, new_job_id().encode())
        os._exit(0)
    os.close(write)
    parent_next = new_job_id()
    child_first = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert len(child_first) == 22
    assert child_first != parent_next
