"""Sharded queues: one logical queue spread over N hash tags (``Queue(shards=N)``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import pytest
from redis.crc import key_slot

import queue_async as qa
from queue_async.producer.shards import shard_names
from queue_async.worker.crons import fire
from tests.conftest import unique_name
from tests.helpers import FAST

pytestmark = pytest.mark.anyio

SHARDS = 4


async def _drop(queue: qa.Queue) -> None:
    for shard in queue.shards:
        prefix = shard._broker.keys.prefix
        keys = [key async for key in queue.client.scan_iter(match=f"{prefix}*", count=1000)]
        for key in keys:  # one by one: on a cluster the shards' keys are in other slots
            await queue.client.delete(key)


@pytest.fixture
async def sharded(redis_url: str) -> AsyncIterator[qa.Queue]:
    queue = qa.Queue(redis_url, name=unique_name(), shards=SHARDS)
    yield queue
    await _drop(queue)
    await queue.close()


async def burst(queue: qa.Queue, **settings: object) -> qa.Worker:
    worker = qa.Worker(queue, **{**FAST, **settings})  # type: ignore[arg-type]
    with anyio.fail_after(30):
        await worker.run(burst=True, handle_signals=False)
    return worker


def test_shard_names_fall_in_equal_slot_ranges_one_each() -> None:
    for count in (2, 3, 6, 16):
        names = shard_names("orders", count)
        assert len(set(names)) == count
        places = [key_slot(name.encode()) * count // 16384 for name in names]
        assert places == list(range(count))
        assert all(name.startswith("orders.") for name in names)
    assert shard_names("orders", 3) == shard_names("orders", 3)  # every process agrees
    assert shard_names("orders", 1) == ("orders",)


@pytest.mark.parametrize("shards", [0, -1, 1025, True, "2", 2.0])
def test_a_shard_count_out_of_range_is_refused(redis_url: str, shards: object) -> None:
    with pytest.raises(qa.ConfigurationError, match="shards must be an integer from 1 to 1024"):
        qa.Queue(redis_url, name="x", shards=shards)  # type: ignore[arg-type]


async def test_jobs_spread_over_every_shard_and_all_run(sharded: qa.Queue) -> None:
    @sharded.task
    async def double(n: int) -> int:
        return 2 * n

    many = await sharded.enqueue_many([double.call(n) for n in range(300)])
    singles = await asyncio.gather(*(double.enqueue(n) for n in range(300, 400)))
    handles = [*many, *singles]
    assert [h.queue for h in handles] == [sharded] * 400
    per_shard = Counter(sharded.shard_for(h.id).name for h in handles)
    assert set(per_shard) == {s.name for s in sharded.shards}
    assert all(count > 50 for count in per_shard.values())
    assert (await sharded.stats()).ready == 400
    waits = [asyncio.ensure_future(h.result(timeout=20)) for h in handles]
    with anyio.fail_after(10):
        while sharded._waiters.waiting < 400:  # one subscription hears every shard
            await anyio.sleep(0.01)
    assert all(shard._waiters is sharded._waiters for shard in sharded.shards)
    await burst(sharded, concurrency=50)
    results = await asyncio.gather(*waits)
    assert results == [2 * n for n in range(400)]
    stats = await sharded.stats()
    assert (stats.queue, stats.processed, stats.ready) == (sharded.name, 400, 0)
    for shard in sharded.shards:
        assert (await shard.stats()).processed == per_shard[shard.name]


async def test_enqueue_many_returns_handles_in_the_order_of_its_jobs(sharded: qa.Queue) -> None:
    @sharded.task
    async def echo(n: int) -> int:
        return n

    handles = await sharded.enqueue_many(
        [echo.options(job_id=f"job-{n}").call(n) for n in range(40)]
    )
    assert [h.id for h in handles] == [f"job-{n}" for n in range(40)]
    again = await sharded.enqueue_many([echo.options(job_id=f"job-{n}").call(n) for n in range(40)])
    assert all(h.existing for h in again)  # an explicit id dedupes: it always names one shard
    assert (await sharded.stats()).ready == 40


async def test_another_process_finds_a_job_by_its_id(sharded: qa.Queue, redis_url: str) -> None:
    @sharded.task(name="shards.square")
    async def square(n: int) -> int:
        return n * n

    handles = await sharded.enqueue_many([square.call(n) for n in range(20)])
    await burst(sharded)
    async with qa.Queue(redis_url, name=sharded.name, shards=SHARDS) as elsewhere:
        for n, handle in enumerate(handles):
            assert await elsewhere.job(handle.id).result(timeout=5) == n * n
            job = await elsewhere.job(handle.id).info()
            assert job.queue == sharded.shard_for(handle.id).name


async def test_jobs_of_one_shard_key_start_in_the_order_they_were_enqueued(
    sharded: qa.Queue,
) -> None:
    started: list[tuple[str, int]] = []

    @sharded.task
    async def step(user: str, n: int) -> None:
        started.append((user, n))

    homes: dict[str, set[str]] = {"ann": set(), "bob": set(), "cy": set()}
    for n in range(30):
        for user, shards in homes.items():
            handle = await step.options(shard_key=user).enqueue(user, n)
            shards.add(sharded.shard_for(handle.id).name)
    assert all(len(shards) == 1 for shards in homes.values())
    await burst(sharded, concurrency=1, prefetch=False)
    for user in homes:
        assert [n for u, n in started if u == user] == list(range(30))


async def test_a_shard_key_and_an_explicit_job_id_cannot_go_together(sharded: qa.Queue) -> None:
    @sharded.task
    async def job() -> None: ...

    with pytest.raises(ValueError, match="shard_key cannot go with job_id"):
        await job.options(shard_key="a", job_id="b").enqueue()
    assert (await sharded.stats()).ready == 0


async def test_a_unique_key_holds_for_the_whole_sharded_queue(sharded: qa.Queue) -> None:
    @sharded.task
    async def report(n: int) -> None: ...

    first = await report.options(unique_key="daily").enqueue(1)
    for n in range(2, 12):
        again = await report.options(unique_key="daily").enqueue(n)
        assert (again.id, again.existing) == (first.id, True)
    assert (await sharded.stats()).ready == 1


async def test_a_concurrency_key_limits_the_whole_sharded_queue(sharded: qa.Queue) -> None:
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    @sharded.task(concurrency_key=lambda customer, n: customer, concurrency_limit=1)
    async def sync(customer: str, n: int) -> None:
        running[customer] += 1
        peak[customer] = max(peak[customer], running[customer])
        await anyio.sleep(0.01)
        running[customer] -= 1

    await sharded.enqueue_many([sync.call(c, n) for n in range(8) for c in ("acme", "globex")])
    await burst(sharded, concurrency=16)
    assert peak == {"acme": 1, "globex": 1}
    assert (await sharded.stats()).processed == 16


async def test_a_worker_takes_from_every_shard_in_turn(sharded: qa.Queue) -> None:
    order: list[str] = []

    @sharded.task
    async def job(ctx: qa.JobContext, n: int) -> None:
        order.append(sharded.shard_for(ctx.job_id).name)

    await sharded.enqueue_many([job.call(n) for n in range(200)])
    await burst(sharded, concurrency=1, prefetch=False)
    assert len(order) == 200
    # Each shard is leased from within the first few rounds, not after the others drained.
    assert set(order[: 2 * SHARDS]) == {s.name for s in sharded.shards}


async def test_a_handler_enqueues_through_its_context_into_the_right_shard(
    sharded: qa.Queue,
) -> None:
    follow_ups: list[qa.JobHandle[int]] = []

    @sharded.task
    async def child(n: int) -> int:
        return n + 1

    @sharded.task
    async def parent(ctx: qa.JobContext, n: int) -> None:
        assert ctx.queue is sharded
        follow_ups.append(await ctx.queue.enqueue(child.name, n))

    await sharded.enqueue_many([parent.call(n) for n in range(12)])
    await burst(sharded)
    assert sorted([await h.result(timeout=5) for h in follow_ups]) == list(range(1, 13))


async def test_pause_and_resume_apply_to_every_shard(sharded: qa.Queue) -> None:
    @sharded.task
    async def job(n: int) -> None: ...

    await sharded.enqueue_many([job.call(n) for n in range(40)])
    await sharded.pause()
    stats = await sharded.stats()
    assert stats.paused
    assert all([(await shard.stats()).paused for shard in sharded.shards])
    worker = qa.Worker(sharded, **FAST)
    with anyio.fail_after(10):
        await worker.run(burst=True, handle_signals=False)
    assert (await sharded.stats()).processed == 0
    await sharded.resume()
    await burst(sharded)
    assert (await sharded.stats()).processed == 40


async def test_a_pipeline_cannot_hold_the_jobs_of_a_sharded_queue(sharded: qa.Queue) -> None:
    @sharded.task
    async def job() -> None: ...

    async with sharded.client.pipeline() as pipe:
        with pytest.raises(qa.ConfigurationError, match="cannot hold them"):
            await sharded.enqueue_many([job.call()], pipeline=pipe)  # type: ignore[arg-type]
        with pytest.raises(qa.ConfigurationError, match="cannot hold them"):
            await sharded.enqueue_spec(job.call(), pipeline=pipe)  # type: ignore[arg-type]
    assert (await sharded.stats()).ready == 0


async def test_a_cron_tick_goes_to_one_shard_once(sharded: qa.Queue) -> None:
    @sharded.cron("* * * * * *", name="every-second")
    async def tick() -> None: ...

    schedule = sharded.crons["every-second"]
    at = datetime(2026, 12, 3, 8, 0, 0, tzinfo=UTC)
    for shard in sharded.shards:  # every worker fires every tick on every shard it serves
        for _ in range(2):
            await fire(shard, shard._broker.scripts, schedule, at, reconnect_max=1.0)
    job_id = schedule.job_id(at)
    assert (await sharded.stats()).ready == 1
    assert (await sharded.shard_for(job_id).stats()).ready == 1
    assert (await sharded.job(job_id).info()).task == schedule.task.name


async def test_admin_lists_and_repairs_the_jobs_of_every_shard(sharded: qa.Queue) -> None:
    @sharded.task(retries=0)
    async def fails(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    handles = await sharded.enqueue_many([fails.call(n) for n in range(30)])
    await burst(sharded)
    admin = qa.Admin(sharded)
    assert (await admin.stats()).dead == 30
    listed: list[str] = []
    cursor: str | None = None
    while True:
        page = await admin.jobs("dead", limit=7, cursor=cursor)
        listed += [job.id for job in page.jobs]
        cursor = page.cursor
        if cursor is None:
            break
    assert sorted(listed) == sorted(h.id for h in handles)
    assert (await admin.job(handles[0].id)).status == "dead"
    assert await admin.retry(handles[0].id) is True
    assert await admin.delete(handles[1].id) is True
    seen: list[int] = []
    assert await admin.retry_dead(search="boom", limit=10, progress=seen.append) == 10
    assert seen and seen[-1] == 10
    assert await admin.purge("dead", limit=100) == 30 - 1 - 1 - 10
    stats = await admin.stats()
    assert (stats.dead, stats.ready) == (0, 11)
    with pytest.raises(qa.ConfigurationError, match="is not one a listing of this queue returned"):
        await admin.jobs("dead", cursor="99.x")
    with pytest.raises(qa.JobNotFound):
        await admin.delete("no-such-job")


async def test_admin_shows_a_worker_of_every_shard_once(sharded: qa.Queue) -> None:
    gate = anyio.Event()

    @sharded.task
    async def wait() -> None:
        await gate.wait()

    await sharded.enqueue_many([wait.call() for _ in range(20)])
    admin = qa.Admin(sharded)
    async with qa.Worker(sharded, concurrency=20, **FAST) as worker:
        with anyio.fail_after(10):
            while True:
                workers = await admin.workers()
                if workers and len(workers[0].jobs) == 20:
                    break
                await anyio.sleep(0.05)
        assert [(w.id, w.queue) for w in workers] == [(worker.id, sharded.name)]
        gate.set()


async def test_the_command_line_reaches_a_sharded_queue_with_shards(
    sharded: qa.Queue, redis_url: str
) -> None:
    from tests.test_cli_admin import failed_with, run  # noqa: PLC0415 - its subprocess runner

    @sharded.task(name="shards.boom", retries=0)
    async def boom(n: int) -> None:
        raise qa.Fatal(f"declined {n}")

    await sharded.enqueue_many([boom.call(n) for n in range(12)])
    await burst(sharded)
    place = ["--url", redis_url, "--prefix", sharded.prefix, "--queue", sharded.name]
    info = await run("info", "--json", *place, "--shards", str(SHARDS))
    assert info.code == 0, info.err
    assert (info.json()["queue"], info.json()["dead"]) == (sharded.name, 12)
    retried = await run("retry", "--dead", "--json", *place, "--shards", str(SHARDS), "--yes")
    assert retried.code == 0, retried.err
    assert (await sharded.stats()).ready == 12
    failed_with(await run("info", *place, "--shards", "0"), 2, "--shards")
