"""Direct hand-off: enqueue.lua leases a new job straight to an idle worker's inbox.

These tests register "workers" through lease.lua itself (a worker id with no process behind
it), so they can look at what a dead or stopping idle worker leaves behind.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer
from queue_async.worker.jobs import handed_job, parse_lease
from tests.helpers import FAST, ready_ids

pytestmark = pytest.mark.anyio


async def register_idle(
    queue: qa.Queue, worker: str, free: int, lease_ms: int = 30_000, grace_ms: int = 20_000
) -> None:
    """Lease with nothing ready: lease.lua registers ``worker`` as idle with ``free`` slots."""
    reply = await queue._broker.scripts.lease(
        free, lease_ms, f"{worker}:1", worker, 3, 60_000, 100, 5000, grace_ms
    )
    assert parse_lease(reply, queue)[2] == []


async def noop_task(queue: qa.Queue) -> qa.Task[[], None]:
    @queue.task(name="noop")
    async def noop() -> None: ...

    return noop


async def test_new_job_is_leased_straight_to_an_idle_worker(queue: qa.Queue) -> None:
    noop = await noop_task(queue)
    await register_idle(queue, "w1", free=5)
    handle = await noop.enqueue()

    info = await handle.info()
    assert info.status is qa.JobStatus.ACTIVE and info.attempts == 1 and info.worker == "w1"
    assert await queue.client.zscore(queue._broker.keys.active, handle.id) is not None
    assert await queue.client.zcard(queue._broker.keys.ready) == 0
    assert await queue.client.llen(queue._broker.keys.wake) == 0  # nobody else needs waking
    packed = await queue.client.lpop(queue._broker.keys.inbox("w1"))
    job = handed_job(packed, queue)
    assert (job.id, job.task, job.attempt) == (handle.id, "noop", 1)
    assert (
        job.token == (await queue.client.hget(queue._broker.keys.job(handle.id), "token")).decode()
    )


async def test_a_handed_job_carries_its_options_as_a_leased_one_would(queue: qa.Queue) -> None:
    @queue.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    await register_idle(queue, "w1", free=1)
    handle = await add.options(retries=4, timeout=2.5, keep_result=60).enqueue(1, 2)
    job = handed_job(await queue.client.lpop(queue._broker.keys.inbox("w1")), queue)
    stored = await queue.client.hgetall(queue._broker.keys.job(handle.id))
    assert (job.retries, job.timeout_ms, job.keep_ms) == (4, 2500, 60_000)
    assert job.payload == stored[b"payload"]
    assert job.enqueued_ms == int(stored[b"enqueued"]) == int(stored[b"started"])
    assert (stored[b"attempts"], stored[b"state"], stored[b"worker"]) == (b"1", b"active", b"w1")
    # The idle worker's lease grace travels with the job (see recover_expired in
    # lua/includes/leases.lua).
    assert stored[b"grace"] == b"20000"
    assert (stored[b"retries"], stored[b"timeout"], stored[b"keep"]) == (b"4", b"2500", b"60000")


async def test_idle_workers_take_turns_and_only_up_to_their_free_slots(queue: qa.Queue) -> None:
    noop = await noop_task(queue)
    await register_idle(queue, "w1", free=2)
    await register_idle(queue, "w2", free=1)
    handles = await queue.enqueue_many([noop.call() for _ in range(5)])
    workers = [(await h.info()).worker for h in handles]
    assert workers[:3] in (["w1", "w2", "w1"], ["w2", "w1", "w1"])
    assert workers[3:] == [None, None]
    assert len(await ready_ids(queue)) == 2
    assert await queue.client.llen(queue._broker.keys.idle) == 0
    assert await queue.client.llen(queue._broker.keys.wake) == 1


async def test_one_call_hands_jobs_round_the_rotation_and_leaves_it_as_one_by_one_would(
    queue: qa.Queue,
) -> None:
    """A batch takes each idle worker's keys once, yet leaves the rotation, the free counts
    and the inboxes exactly as handing its jobs one call at a time would."""
    noop = await noop_task(queue)
    keys = queue._broker.keys
    await queue.client.rpush(keys.idle, "ghost")  # its registration expired: dropped
    for worker, free in (("w1", 3), ("w2", 2), ("w3", 4)):
        await register_idle(queue, worker, free=free)
    handles = await queue.enqueue_many([noop.call() for _ in range(4)])

    assert [(await h.info()).worker for h in handles] == ["w1", "w2", "w3", "w1"]
    assert await queue.client.lrange(keys.idle, 0, -1) == [b"w2", b"w3", b"w1"]
    for worker, free in (("w1", 1), ("w2", 1), ("w3", 3)):
        assert await queue.client.hget(f"{keys.prefix}idle:{worker}", "free") == str(free).encode()
    inboxes = {
        worker: [handed_job(p, queue) for p in await queue.client.lrange(keys.inbox(worker), 0, -1)]
        for worker in ("w1", "w2", "w3", "ghost")
    }
    assert {w: [j.id for j in jobs] for w, jobs in inboxes.items()} == {
        "w1": [handles[0].id, handles[3].id],
        "w2": [handles[1].id],
        "w3": [handles[2].id],
        "ghost": [],
    }
    tokens = set()
    for jobs in inboxes.values():
        for job in jobs:
            stored = await queue.client.hget(keys.job(job.id), "token")
            assert stored == job.token.encode()
            tokens.add(job.token)
    assert len(tokens) == 4
    assert 0 < await queue.client.pttl(keys.inbox("w1")) <= 30_000
    assert await queue.client.zcard(keys.active) == 4
    assert await queue.client.llen(keys.wake) == 0


async def test_a_mixed_batch_is_handed_off_in_its_order(queue: qa.Queue) -> None:
    """Jobs without options and jobs with some take idle workers in the batch's order; the
    first that finds none and every job after it wait in ready, in order."""
    noop = await noop_task(queue)
    for worker in ("w1", "w2", "w3"):
        await register_idle(queue, worker, free=1)
    with_options = noop.options(retries=2)
    handles = await queue.enqueue_many(
        [noop.call(), with_options.call(), noop.call(), with_options.call(), noop.call()]
    )
    assert [(await h.info()).worker for h in handles] == ["w1", "w2", "w3", None, None]
    assert await ready_ids(queue) == [handles[3].id, handles[4].id]


async def test_a_job_never_handed_off_stops_the_hand_offs_after_it(queue: qa.Queue) -> None:
    """A job with a concurrency key goes to ready, and so do the jobs after it, though an
    idle worker has slots: none starts ahead of it."""
    noop = await noop_task(queue)

    @queue.task(name="keyed", concurrency_key=lambda: "k")
    async def keyed() -> None: ...

    await register_idle(queue, "w1", free=5)
    handles = await queue.enqueue_many([noop.call(), keyed.call(), noop.call()])
    assert [(await h.info()).worker for h in handles] == ["w1", None, None]
    assert [await h.status() for h in handles[1:]] == [qa.JobStatus.READY] * 2


async def test_no_hand_off_while_older_jobs_wait_in_ready(queue: qa.Queue) -> None:
    noop = await noop_task(queue)
    older = await noop.enqueue()
    await queue.client.rpush(queue._broker.keys.idle, "w1")
    await queue.client.hset(
        f"{queue._broker.keys.prefix}idle:w1", mapping={"free": 5, "lease": 30_000}
    )
    newer = await noop.enqueue()
    assert await older.status() is qa.JobStatus.READY
    assert await newer.status() is qa.JobStatus.READY


async def test_lease_takes_back_the_inbox_and_leaves_the_rotation(queue: qa.Queue) -> None:
    noop = await noop_task(queue)
    await register_idle(queue, "w1", free=5)
    first, second = await noop.enqueue(), await noop.enqueue()
    reply = await queue._broker.scripts.lease(5, 30_000, "w1:2", "w1", 3, 60_000, 100, 0, 20_000)
    _, _, jobs = parse_lease(reply, queue)
    assert [j.id for j in jobs] == [first.id, second.id]
    assert await queue.client.exists(queue._broker.keys.inbox("w1")) == 0
    assert await queue.client.llen(queue._broker.keys.idle) == 0
    third = await noop.enqueue()  # w1 is not idle any more (max idle 0: not registered)
    assert await third.status() is qa.JobStatus.READY


async def test_retiring_worker_hands_its_inbox_back_to_ready(queue: qa.Queue) -> None:
    noop = await noop_task(queue)
    await register_idle(queue, "w1", free=5)
    handle = await noop.enqueue()
    assert await queue._broker.scripts.retire("w1") == 1
    info = await handle.info()
    assert info.status is qa.JobStatus.READY and info.attempts == 0 and info.worker is None
    assert await queue.client.zcard(queue._broker.keys.active) == 0
    assert (
        await queue.client.exists(
            queue._broker.keys.inbox("w1"), f"{queue._broker.keys.prefix}idle:w1"
        )
        == 0
    )
    assert await queue.client.llen(queue._broker.keys.idle) == 0


async def test_job_handed_to_a_dead_idle_worker_is_recovered_after_its_lease(
    queue: qa.Queue,
) -> None:
    noop = await noop_task(queue)
    await register_idle(queue, "ghost", free=5, lease_ms=300, grace_ms=600)
    handle = await noop.enqueue()
    assert (await handle.info()).worker == "ghost"
    async with qa.Worker(queue, **FAST):
        await handle.result(timeout=10)
    info = await handle.info()
    assert info.status is qa.JobStatus.DONE and info.attempts == 2


async def test_idle_registration_expires_with_the_workers_wait(queue: qa.Queue) -> None:
    noop = await noop_task(queue)
    reply = await queue._broker.scripts.lease(5, 30_000, "w1:1", "w1", 3, 60_000, 100, 1, 20_000)
    assert parse_lease(reply, queue)[2] == []
    ttl = await queue.client.pttl(f"{queue._broker.keys.prefix}idle:w1")
    assert 0 < ttl <= 501
    with anyio.fail_after(3):
        while await queue.client.exists(f"{queue._broker.keys.prefix}idle:w1"):
            await anyio.sleep(0.05)
    handle = await noop.enqueue()
    assert await handle.status() is qa.JobStatus.READY


async def test_running_worker_gets_jobs_by_hand_off_and_stops_cleanly(queue: qa.Queue) -> None:
    seen: list[str] = []

    @queue.task
    async def note(ctx: qa.JobContext) -> None:
        token = await queue.client.hget(queue._broker.keys.job(ctx.job_id), "token")
        seen.append(token.decode())

    async with qa.Worker(queue, **FAST) as worker:
        with anyio.fail_after(5):
            while not await queue.client.llen(queue._broker.keys.idle):
                await anyio.sleep(0.01)
        handles = [await note.enqueue() for _ in range(3)]
        for handle in handles:
            await handle.result(timeout=5)
    assert all(token.startswith(f"{worker.id}:h") for token in seen)
    assert await queue.client.llen(queue._broker.keys.idle) == 0
    assert await queue.client.exists(queue._broker.keys.inbox(worker.id)) == 0


async def test_an_idle_worker_takes_all_the_jobs_of_one_enqueue_call_in_its_wait(
    queue: qa.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the server has BLMPOP (Redis 7+), the jobs handed in one enqueue call start
    without a lease call for all but the first (with BLPOP, the lease takes the rest)."""
    started: list[str] = []

    @queue.task
    async def note(ctx: qa.JobContext) -> None:
        started.append(ctx.job_id)

    leased_by_lease: list[int] = []
    async with qa.Worker(queue, **FAST) as worker:
        lane = worker._lanes[0]
        lease = lane.lease

        async def counted(*args: object, **kwargs: object) -> tuple[int, int, list[object]]:
            reply = await lease(*args, **kwargs)  # type: ignore[arg-type]
            leased_by_lease.append(len(reply[2]))
            return reply  # type: ignore[return-value]

        monkeypatch.setattr(lane, "lease", counted)
        with anyio.fail_after(5):
            while not await queue.client.llen(queue._broker.keys.idle):
                await anyio.sleep(0.01)
        handles = await queue.enqueue_many([note.call() for _ in range(20)])
        for handle in handles:
            await handle.result(timeout=5)
    assert sorted(started) == sorted(h.id for h in handles)
    if lane.scripts.functions:  # Redis 7+: BLMPOP took them all
        assert sum(leased_by_lease) == 0, leased_by_lease
    else:
        assert sum(leased_by_lease) == 19, leased_by_lease


async def test_a_worker_whose_user_may_not_blmpop_waits_with_blpop(
    private_server: EmbeddedServer,
) -> None:
    admin = redis.asyncio.Redis.from_url(private_server.url)
    await admin.execute_command(
        "ACL", "SETUSER", "no-blmpop", "on", ">secret", "~*", "&*", "+@all", "-blmpop"
    )
    await admin.aclose()
    url = private_server.url.replace("redis://", "redis://no-blmpop:secret@", 1)
    async with qa.Queue(url, name="acl") as queue:

        @queue.task
        async def double(n: int) -> int:
            return 2 * n

        async with qa.Worker(queue, **FAST) as worker:
            with anyio.fail_after(5):
                while not await queue.client.llen(queue._broker.keys.idle):
                    await anyio.sleep(0.01)
            handles = await queue.enqueue_many([double.call(n) for n in range(5)])
            with anyio.fail_after(5):
                assert [await h.result() for h in handles] == [0, 2, 4, 6, 8]
            # Where the server has BLMPOP (Redis 7+) the worker tried it and fell back.
            assert worker._waits._many is not bool(worker._lanes[0].scripts.functions)


async def _leased_one(queue: qa.Queue, noop: qa.Task[[], None], worker: str) -> tuple[str, str]:
    """Enqueue a job and lease it to ``worker`` (registered as nothing): its id and token."""
    handle = await noop.enqueue()
    reply = await queue._broker.scripts.lease(
        1, 30_000, f"{worker}:1", worker, 3, 60_000, 100, 0, 20_000
    )
    [job] = parse_lease(reply, queue)[2]
    assert job.id == handle.id
    return job.id, job.token


async def test_a_completion_registers_its_worker_as_idle_for_the_next_enqueue(
    queue: qa.Queue,
) -> None:
    noop = await noop_task(queue)
    keys = queue._broker.keys
    first, second = await _leased_one(queue, noop, "w1"), await _leased_one(queue, noop, "w2")
    offer = ("w1", 2, 30_000, 20_000, 5000)
    assert await queue._broker.scripts.complete([*first, b"null", 60_000], idle=offer) == [1]
    assert await queue.client.lrange(keys.idle, 0, -1) == [b"w1"]
    assert 0 < await queue.client.pttl(f"{keys.prefix}idle:w1") <= 5500
    await queue._broker.scripts.complete([*second, b"null", 60_000], idle=("w2", *offer[1:]))
    # Registered again: still once in the rotation, behind w2.
    await queue._broker.scripts.complete([], idle=offer)
    assert await queue.client.lrange(keys.idle, 0, -1) == [b"w2", b"w1"]

    handles = await queue.enqueue_many([noop.call() for _ in range(3)])
    assert [(await h.info()).worker for h in handles] == ["w2", "w1", "w2"]
    assert await queue.client.llen(keys.inbox("w2")) == 2


async def test_a_completion_offers_no_slot_its_inbox_already_fills(queue: qa.Queue) -> None:
    """Jobs handed to a worker and not yet taken fill slots that its free count, counted
    before the call, still shows as free."""
    noop = await noop_task(queue)
    keys = queue._broker.keys
    first, second = await _leased_one(queue, noop, "w1"), await _leased_one(queue, noop, "w1")
    await register_idle(queue, "w1", free=1)
    handed = await noop.enqueue()
    assert (await handed.info()).worker == "w1"
    assert await queue.client.llen(keys.idle) == 0
    await queue._broker.scripts.complete([*first, b"null", 60_000], idle=("w1", 1, 30_000, 0, 5000))
    assert await queue.client.llen(keys.idle) == 0
    await queue._broker.scripts.complete(
        [*second, b"null", 60_000], idle=("w1", 3, 30_000, 0, 5000)
    )
    assert await queue.client.hget(f"{keys.prefix}idle:w1", "free") == b"2"


async def test_a_completion_does_not_register_its_worker_while_jobs_are_ready_or_gated(
    queue: qa.Queue,
) -> None:
    noop = await noop_task(queue)
    keys = queue._broker.keys
    offer = ("w1", 5, 30_000, 20_000, 5000)
    job_id, token = await _leased_one(queue, noop, "w1")
    waiting = await noop.enqueue()
    await queue._broker.scripts.complete([job_id, token, b"null", 60_000], idle=offer)
    assert await queue.client.llen(keys.idle) == 0
    assert await waiting.status() is qa.JobStatus.READY

    await queue.client.delete(keys.fifo, keys.fresh)
    job_id, token = await _leased_one(queue, noop, "w1")
    await queue._broker.scripts.pause("noop")  # a gate: hand-offs would skip it
    await queue._broker.scripts.complete([job_id, token, b"null", 60_000], idle=offer)
    assert await queue.client.llen(keys.idle) == 0


async def test_a_lease_that_fills_its_count_registers_the_free_slots_it_leaves(
    queue: qa.Queue,
) -> None:
    noop = await noop_task(queue)
    keys = queue._broker.keys
    await queue.enqueue_many([noop.call() for _ in range(3)])
    # Three of ten free slots taken, at most three at once: seven are left, three offered.
    reply = await queue._broker.scripts.lease(
        3, 30_000, "w1:1", "w1", 3, 60_000, 100, 5000, 20_000, slots=10
    )
    assert len(parse_lease(reply, queue)[2]) == 3
    assert await queue.client.hget(f"{keys.prefix}idle:w1", "free") == b"3"
    # Without the slots, a lease that took its count offers nothing, as before.
    await queue._broker.scripts.retire("w1")
    await queue.enqueue_many([noop.call() for _ in range(3)])
    reply = await queue._broker.scripts.lease(3, 30_000, "w2:1", "w2", 3, 60_000, 100, 5000, 20_000)
    assert len(parse_lease(reply, queue)[2]) == 3
    assert await queue.client.exists(f"{keys.prefix}idle:w2") == 0


async def test_a_busy_worker_takes_many_of_its_clients_jobs_by_hand_off(queue: qa.Queue) -> None:
    """Once its completions register it, a worker fed by clients that each wait for their
    last result takes many of their jobs from its inbox rather than by a lease call."""
    tokens: list[str] = []

    @queue.task
    async def echo(ctx: qa.JobContext, n: int) -> int:
        tokens.append(ctx.token)
        return n

    async def client(k: int) -> None:
        for n in range(20):
            assert await (await echo.enqueue(k * 100 + n)).result(timeout=10) == k * 100 + n

    async with qa.Worker(queue, concurrency=20, lease_batch=10) as worker:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for k in range(20):
                    tg.start_soon(client, k)
    handed = sum(token.startswith(f"{worker.id}:h") for token in tokens)
    assert len(tokens) == 400
    assert handed > 100  # before completions registered the worker: none


async def test_no_completion_registers_the_worker_while_its_lease_call_is_in_flight(
    queue: qa.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The free slots a completion offers are counted with no lease in flight: a lease that
    lands first could fill them, and a job handed to a worker without room would wait in its
    inbox, its lease not extended."""
    scripts = type(queue._broker.scripts)
    lease, complete = scripts.lease, scripts.complete
    leasing = 0
    offers_while_leasing = 0
    offers = 0

    async def slow_lease(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal leasing
        leasing += 1
        try:
            await anyio.sleep(0.02)
            return await lease(self, *args, **kwargs)
        finally:
            leasing -= 1

    async def watched_complete(self: Any, fields: Any, *, idle: Any = None) -> Any:
        nonlocal offers, offers_while_leasing
        if idle is not None:
            offers += 1
            offers_while_leasing += leasing > 0
        return await complete(self, fields, idle=idle)

    monkeypatch.setattr(scripts, "lease", slow_lease)
    monkeypatch.setattr(scripts, "complete", watched_complete)

    @queue.task
    async def nap(n: int) -> int:
        await anyio.sleep(0.01 * (n % 3))
        return n

    async def client() -> None:
        n = 0
        while offers < 20 or n < 15:
            assert await (await nap.enqueue(n)).result(timeout=10) == n
            n += 1

    async with qa.Worker(queue, concurrency=8, lease_batch=4):
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(client)
    assert offers >= 20
    assert offers_while_leasing == 0
