"""Admin: listing jobs by state with cursors and filters, retry in place, delete, purge."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import queue_async as qa
from queue_async.admin import jobs as admin_jobs
from tests.helpers import FAST, drain
from tests.lua._support import lease

pytestmark = pytest.mark.anyio


def _tasks(queue: qa.Queue) -> tuple[qa.Task[Any, Any], qa.Task[Any, Any]]:
    @queue.task(name="ok")
    async def ok(n: int) -> int:
        return n

    @queue.task(name="boom", retries=0)
    async def boom(n: int, why: str = "card declined") -> None:
        raise qa.Fatal(f"{why} #{n}")

    return ok, boom


async def _all(admin: qa.Admin, state: Any, **filters: Any) -> list[qa.Job]:
    """Every job of a listing, walking its pages."""
    jobs: list[qa.Job] = []
    cursor = None
    for _ in range(1000):
        page = await admin.jobs(state, cursor=cursor, **filters)
        jobs += page.jobs
        cursor = page.cursor
        if cursor is None:
            return jobs
    raise AssertionError("the listing never ended")


async def test_dead_jobs_page_by_page_oldest_and_newest(queue: qa.Queue) -> None:
    _, boom = _tasks(queue)
    for n in range(25):
        await boom.options(job_id=f"d{n:02}").enqueue(n)
        await drain(queue)  # one at a time: distinct finish times, a known order
    admin = qa.Admin(queue)
    first = await admin.jobs("dead", limit=10)
    assert [j.id for j in first.jobs] == [f"d{n:02}" for n in range(10)]
    assert first.cursor is not None
    assert first.jobs[0].status is qa.JobStatus.DEAD
    assert first.jobs[0].error is not None and "card declined #0" in first.jobs[0].error
    assert first.jobs[0].args == [0]
    second = await admin.jobs("dead", limit=10, cursor=first.cursor)
    assert [j.id for j in second.jobs] == [f"d{n:02}" for n in range(10, 20)]
    newest = await admin.jobs("dead", order="newest", limit=3)
    assert [j.id for j in newest.jobs] == ["d24", "d23", "d22"]
    assert [j.id for j in await _all(admin, "dead")] == [f"d{n:02}" for n in range(25)]


async def test_a_cursor_stays_valid_while_jobs_leave_the_state(queue: qa.Queue) -> None:
    _, boom = _tasks(queue)
    for n in range(30):
        await boom.options(job_id=f"d{n:02}").enqueue(n)
        await drain(queue)
    admin = qa.Admin(queue)
    first = await admin.jobs("dead", limit=10)
    # The last job of the page and some before and after it leave the dead set.
    for job_id in ("d05", "d09", "d12"):
        assert await admin.delete(job_id)
    second = await admin.jobs("dead", limit=5, cursor=first.cursor)
    assert [j.id for j in second.jobs] == ["d10", "d11", "d13", "d14", "d15"]


async def test_ready_jobs_list_in_lease_order_across_priorities(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    await ok.options(job_id="p0-a").enqueue(1)
    await ok.options(job_id="late", priority=5).enqueue(2)
    await ok.options(job_id="urgent", priority=-5).enqueue(3)
    await ok.options(job_id="p0-b").enqueue(4)
    admin = qa.Admin(queue)
    assert [j.id for j in await _all(admin, "ready")] == ["urgent", "p0-a", "p0-b", "late"]
    newest = await _all(admin, "ready", order="newest")
    assert [j.id for j in newest] == ["late", "p0-b", "p0-a", "urgent"]
    pages = [[j.id for j in p.jobs] for p in await _pages(admin, "ready", limit=1)]
    assert pages == [["urgent"], ["p0-a"], ["p0-b"], ["late"]]


async def _pages(admin: qa.Admin, state: Any, **options: Any) -> list[qa.JobPage]:
    pages = [await admin.jobs(state, **options)]
    while pages[-1].cursor is not None:
        pages.append(await admin.jobs(state, cursor=pages[-1].cursor, **options))
    return [p for p in pages if p.jobs]


async def test_a_ready_cursor_survives_the_jobs_before_it_being_leased(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    await queue.enqueue_many([ok.call(n) for n in range(100)])
    admin = qa.Admin(queue)
    first = await admin.jobs("ready", limit=10)
    ids = [j.id for j in first.jobs]
    # A worker takes the first 40 jobs: those listed, and 30 after them.
    assert len((await lease(queue, 40)).ids) == 40
    second = await admin.jobs("ready", limit=10, cursor=first.cursor)
    all_ids = [j.id for j in await _all(admin, "ready")]
    assert len(all_ids) == 60
    # Nothing listed twice, and the page goes on with what is still ready.
    assert not set(ids) & {j.id for j in second.jobs}
    assert [j.id for j in second.jobs] == all_ids[:10]


async def test_scheduled_active_and_done_listings(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    started, release = anyio.Event(), anyio.Event()

    @queue.task(name="slow")
    async def slow() -> str:
        started.set()
        await release.wait()
        return "finished"

    await ok.options(job_id="later", delay=3600).enqueue(1)
    await ok.options(job_id="sooner", delay=60).enqueue(2)
    await slow.options(job_id="running").enqueue()
    admin = qa.Admin(queue)
    assert [j.id for j in (await admin.jobs("scheduled")).jobs] == ["sooner", "later"]
    worker = qa.Worker(queue, **FAST)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            await started.wait()
        active = (await admin.jobs("active")).jobs
        assert [(j.id, j.status) for j in active] == [("running", qa.JobStatus.ACTIVE)]
        release.set()
        with anyio.fail_after(10):
            while not (await admin.jobs("done")).jobs:
                await anyio.sleep(0.02)
        worker.stop()
    done = (await admin.jobs("done")).jobs
    assert [(j.id, j.result) for j in done] == [("running", "finished")]


async def test_filters_by_task_and_by_text_in_id_arguments_and_error(queue: qa.Queue) -> None:
    ok, boom = _tasks(queue)
    await boom.options(job_id="order-17").enqueue(1, "Network TIMEOUT")
    await boom.options(job_id="order-18").enqueue(2, "card declined")
    await boom.options(job_id="x-3").enqueue(3, "card declined")
    await drain(queue)
    await ok.options(job_id="ready-1").enqueue(42)
    admin = qa.Admin(queue)
    assert {j.id for j in await _all(admin, "dead", search="timeout")} == {"order-17"}
    assert {j.id for j in await _all(admin, "dead", search="ORDER-")} == {"order-17", "order-18"}
    assert {j.id for j in await _all(admin, "dead", task="boom")} == {"order-17", "order-18", "x-3"}
    assert await _all(admin, "dead", task="ok") == []
    # Arguments of a job still in its compact ready form are searched too.
    assert [j.id for j in await _all(admin, "ready", search="42")] == ["ready-1"]


async def test_a_filtered_walk_is_bounded_per_call_and_goes_on(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    await queue.enqueue_many([ok.call(n) for n in range(2500)])
    await ok.options(job_id="needle").enqueue(-1)
    admin = qa.Admin(queue)
    page = await admin.jobs("ready", search="needle")
    # 1,000 entries per call at most: the match is past the first two calls.
    assert page.jobs == [] and page.cursor is not None and page.scanned == 1000
    found = await _all(admin, "ready", search="needle")
    assert [j.id for j in found] == ["needle"]


async def test_retry_requeues_a_dead_job_in_place_with_its_history(queue: qa.Queue) -> None:
    state = {"fail": True}

    @queue.task(name="flaky", retries=0)
    async def flaky() -> str:
        if state["fail"]:
            raise RuntimeError("first time")
        return "second time"

    handle = await flaky.options(job_id="j1").enqueue()
    await drain(queue)
    dead = await handle.info()
    assert dead.status is qa.JobStatus.DEAD and dead.attempts == 1
    admin = qa.Admin(queue)
    assert await admin.retry("j1")
    retried = await handle.info()
    assert retried.status is qa.JobStatus.READY
    assert retried.attempts == 1 and retried.error is not None and "first time" in retried.error
    assert (await admin.stats()).dead == 0
    state["fail"] = False
    await drain(queue)
    assert await handle.result(timeout=5) == "second time"
    assert (await handle.info()).attempts == 2
    assert not await admin.retry("j1")  # done: nothing to retry


async def test_retry_at_a_time_schedules_it(queue: qa.Queue) -> None:
    _, boom = _tasks(queue)
    handle = await boom.options(job_id="j").enqueue(1)
    await drain(queue)
    admin = qa.Admin(queue)
    assert await admin.retry("j", at=timedelta(hours=1))
    info = await handle.info()
    assert info.status is qa.JobStatus.SCHEDULED
    assert info.scheduled_for is not None
    assert info.scheduled_for > datetime.now(UTC) + timedelta(minutes=59)
    assert (await admin.stats()).scheduled == 1


async def test_retry_of_a_job_waiting_out_its_backoff_runs_it_now(queue: qa.Queue) -> None:
    calls = 0

    @queue.task(name="later", retries=3)
    async def later() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise qa.Retry(defer=3600)

    handle = await later.options(job_id="r").enqueue()
    admin = qa.Admin(queue)
    worker = qa.Worker(queue, **FAST)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            while await handle.status() is not qa.JobStatus.SCHEDULED:
                await anyio.sleep(0.01)
        assert (await admin.stats()).retrying == 1
        assert await admin.retry("r")
        assert await handle.result(timeout=10) is None
        worker.stop()
    assert calls == 2


async def test_retry_refuses_what_it_cannot_retry(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    await ok.options(job_id="waiting").enqueue(1)
    await ok.options(job_id="delayed", delay=3600).enqueue(1)
    admin = qa.Admin(queue)
    assert not await admin.retry("waiting")
    assert not await admin.retry("delayed")  # delayed by its producer, not a retry
    with pytest.raises(qa.JobNotFound, match="has no job 'ghost'"):
        await admin.retry("ghost")
    with pytest.raises(qa.JobNotFound, match="not valid"):
        await admin.retry("has space")
    with pytest.raises(qa.ConfigurationError, match="aware datetime"):
        await admin.retry("waiting", at=datetime(2030, 1, 1))


async def test_retry_dead_by_filter_with_a_cap(queue: qa.Queue) -> None:
    _, boom = _tasks(queue)
    await queue.enqueue_many([boom.call(n, "timeout") for n in range(30)])
    await queue.enqueue_many([boom.call(n, "declined") for n in range(10)])
    await drain(queue)
    admin = qa.Admin(queue)
    assert await admin.retry_dead(search="timeout", limit=12) == 12
    stats = await admin.stats()
    assert (stats.dead, stats.ready) == (28, 12)
    assert await admin.retry_dead(task="boom", search="timeout") == 18
    assert await admin.retry_dead(task="ok") == 0
    assert [j.error for j in await _all(admin, "dead")] == [
        j.error for j in await _all(admin, "dead", search="declined")
    ]


async def test_retry_dead_of_many_goes_in_steps(queue: qa.Queue) -> None:
    _, boom = _tasks(queue)
    await queue.enqueue_many([boom.call(n) for n in range(2300)])
    await drain(queue, limit=60)
    admin = qa.Admin(queue)
    steps: list[int] = []
    retried = await admin_jobs.retry_dead(
        queue, task=None, search=None, limit=5000, at=None, progress=steps.append
    )
    assert retried == 2300
    assert steps[:5] == [500, 1000, 1500, 2000, 2300]
    assert (await admin.stats()).ready == 2300


async def test_delete_jobs_in_every_state_but_running(queue: qa.Queue) -> None:
    ok, boom = _tasks(queue)
    await boom.options(job_id="dead").enqueue(1)
    await ok.options(job_id="done").enqueue(1)
    await drain(queue)
    await ok.options(job_id="fresh").enqueue(1)
    await ok.options(job_id="prio", priority=3).enqueue(1)
    await ok.options(job_id="sched", delay=60).enqueue(1)
    await ok.options(job_id="unique", unique_key="u").enqueue(1)
    admin = qa.Admin(queue)
    for job_id in ("dead", "done", "fresh", "prio", "sched", "unique"):
        assert await admin.delete(job_id), job_id
        assert await queue.job(job_id).status() is None, job_id
    stats = await admin.stats()
    assert (stats.ready, stats.scheduled, stats.dead) == (0, 0, 0)
    assert await _all(admin, "done") == []
    # The unique key is free again.
    again = await ok.options(unique_key="u").enqueue(2)
    assert again.id != "unique"
    with pytest.raises(qa.JobNotFound):
        await admin.delete("dead")
    # A worker finds nothing of the deleted jobs.
    await drain(queue)
    assert (await admin.stats()).processed == 2  # "done" and the second unique job


async def test_delete_refuses_a_running_job_and_wakes_a_result_waiter(queue: qa.Queue) -> None:
    started, release = anyio.Event(), anyio.Event()

    @queue.task(name="slow")
    async def slow() -> None:
        started.set()
        await release.wait()

    @queue.task(name="ok")
    async def ok() -> None: ...

    await slow.options(job_id="running").enqueue()
    waiting = await ok.options(job_id="waiting", delay=3600).enqueue()
    admin = qa.Admin(queue)
    worker = qa.Worker(queue, **FAST)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(10):
            await started.wait()
        assert not await admin.delete("running")
        result = asyncio.ensure_future(waiting.result(timeout=30))
        with anyio.fail_after(10):
            while queue._waiters.waiting == 0:
                await anyio.sleep(0.01)
        assert await admin.delete("waiting")
        with pytest.raises(qa.JobNotFound):
            await result
        release.set()
        worker.stop()


async def test_purge_by_state_and_filter_with_a_cap(queue: qa.Queue) -> None:
    ok, boom = _tasks(queue)
    await queue.enqueue_many([boom.call(n, "timeout") for n in range(20)])
    await queue.enqueue_many([boom.call(n, "declined") for n in range(5)])
    await drain(queue)
    await queue.enqueue_many([ok.call(n) for n in range(50)])
    await queue.enqueue_many([ok.options(delay=600).call(n) for n in range(7)])
    admin = qa.Admin(queue)
    assert await admin.purge("dead", search="timeout", limit=15) == 15
    assert await admin.purge("dead", search="timeout") == 5
    assert (await admin.stats()).dead == 5
    assert await admin.purge("scheduled") == 7
    assert await admin.purge("ready", limit=20) == 20
    stats = await admin.stats()
    assert (stats.ready, stats.scheduled) == (30, 0)
    await drain(queue)
    assert (await admin.stats()).processed == 30


async def test_purging_ready_jobs_from_the_head_leaves_no_tombstones(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    await queue.enqueue_many([ok.call(n) for n in range(3000)])
    keys = queue._broker.keys
    admin = qa.Admin(queue)
    assert await admin.purge("ready") == 3000
    assert await queue.client.llen(keys.fifo) == 0
    assert int(await queue.client.hget(keys.meta, "tombstones") or 0) == 0
    assert await queue.client.hlen(keys.fresh) == 0
    assert (await admin.stats()).ready == 0


async def test_purge_while_a_worker_runs_loses_and_duplicates_nothing(queue: qa.Queue) -> None:
    ran: list[int] = []

    @queue.task(name="count")
    async def count(n: int) -> None:
        ran.append(n)

    await queue.enqueue_many([count.call(n) for n in range(3000)])
    admin = qa.Admin(queue)
    worker = qa.Worker(queue, **FAST)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        purged = await admin.purge("ready")
        with anyio.fail_after(20):
            while (await admin.stats()).active or (await admin.stats()).ready:
                await anyio.sleep(0.02)
        worker.stop()
    assert len(ran) == len(set(ran))
    assert purged + len(ran) == 3000


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: a.jobs("zombie"), "state must be one of"),
        (lambda a: a.jobs("dead", limit=0), "limit must be a positive integer"),
        (lambda a: a.jobs("dead", limit=-5), "limit must be a positive integer"),
        (lambda a: a.jobs("dead", limit=100_000), "limit must be at most 1000"),
        (lambda a: a.jobs("dead", order="sideways"), "order must be"),
        (lambda a: a.jobs("dead", cursor="!!!"), "is not one a listing"),
        (lambda a: a.jobs("dead", task=""), "task name"),
        (lambda a: a.jobs("dead", search="x" * 500), "search must be text"),
        (lambda a: a.purge("active"), "state must be one of ready, scheduled, dead, done"),
        (lambda a: a.purge("dead", limit=-1), "limit must be a positive integer"),
        (lambda a: a.retry_dead(limit=0), "limit must be a positive integer"),
    ],
)
async def test_bad_input_is_refused_with_a_clear_error(
    queue: qa.Queue, call: Any, message: str
) -> None:
    _, boom = _tasks(queue)
    await boom.enqueue(1)
    await drain(queue)
    admin = qa.Admin(queue)
    with pytest.raises(qa.ConfigurationError, match=message):
        await call(admin)
    assert (await admin.stats()).dead == 1  # nothing changed


async def test_a_cursor_of_another_state_is_refused(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    await queue.enqueue_many([ok.call(n) for n in range(5)])
    admin = qa.Admin(queue)
    page = await admin.jobs("ready", limit=2)
    with pytest.raises(qa.ConfigurationError, match="another state"):
        await admin.jobs("dead", cursor=page.cursor)


async def test_admin_connect_needs_no_app(queue: qa.Queue, redis_url: str) -> None:
    _, boom = _tasks(queue)
    await boom.options(job_id="x").enqueue(1)
    await drain(queue)
    async with qa.Admin.connect(redis_url, name=queue.name, prefix=queue.prefix) as admin:
        assert [j.id for j in (await admin.jobs("dead")).jobs] == ["x"]
        assert (await admin.job("x")).task == "boom"
        assert await admin.retry("x")


# -- enqueueing an id that exists ----------------------------------------------------------


async def test_a_handle_says_when_enqueue_found_the_job_already_there(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    first = await ok.options(job_id="same").enqueue(1)
    second = await ok.options(job_id="same").enqueue(2)
    assert (first.existing, second.existing) == (False, True)
    assert second.id == "same"
    held = await ok.options(unique_key="k").enqueue(1)
    again = await ok.options(unique_key="k").enqueue(2)
    assert (held.existing, again.existing, again.id) == (False, True, held.id)
    assert not queue.job("same").existing


async def test_a_dead_job_id_is_returned_unless_replace_is_asked(queue: qa.Queue) -> None:
    ok, boom = _tasks(queue)
    await boom.options(job_id="order-1").enqueue(1)
    await drain(queue)
    kept = await boom.options(job_id="order-1").enqueue(1)
    assert kept.existing and await kept.status() is qa.JobStatus.DEAD
    replaced = await ok.options(job_id="order-1", replace=True).enqueue(7)
    assert not replaced.existing
    info = await replaced.info()
    assert (info.status, info.task, info.attempts, info.error) == (
        qa.JobStatus.READY,
        "ok",
        0,
        None,
    )
    admin = qa.Admin(queue)
    assert (await admin.stats()).dead == 0
    await drain(queue)
    assert await replaced.result(timeout=5) == 7
    # Done, and replaced again: the done listing shows the new one only.
    again = await ok.options(job_id="order-1", replace=True).enqueue(8)
    assert not again.existing
    await drain(queue)
    assert await again.result(timeout=5) == 8
    assert [j.result for j in (await admin.jobs("done")).jobs] == [8]


async def test_replace_never_touches_a_job_that_waits(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    await ok.options(job_id="w", delay=600).enqueue(1)
    same = await ok.options(job_id="w", replace=True).enqueue(2)
    assert same.existing
    assert (await same.info()).args == [1]


async def test_replace_needs_a_job_id(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    with pytest.raises(ValueError, match="replace=True needs a job_id"):
        ok.options(replace=True)


async def test_forget_queue_takes_it_out_of_the_registry(queue: qa.Queue) -> None:
    ok, _ = _tasks(queue)
    await ok.enqueue(1)
    admin = qa.Admin(queue)
    assert queue.name in [s.queue for s in await admin.queues()]
    assert await admin.forget_queue()
    assert queue.name not in [s.queue for s in await admin.queues()]
    assert not await admin.forget_queue()
    assert (await admin.stats()).ready == 1  # its keys are untouched
    with pytest.raises(qa.ConfigurationError, match="queue name"):
        await admin.forget_queue("has space")
