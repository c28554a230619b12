"""What only a cluster shows: queues spread over masters, per-node script loading, clients."""

from __future__ import annotations

import asyncio

import anyio
import pytest
import redis.asyncio

import queue_async as qa
from queue_async.broker.scripts import LIBRARY
from tests.conftest import unique_name
from tests.helpers import FAST

pytestmark = pytest.mark.anyio


def _names_on_distinct_masters(client: redis.asyncio.RedisCluster, count: int) -> list[str]:
    """Queue names whose slots are served by ``count`` different masters."""
    by_node: dict[str, str] = {}
    while len(by_node) < count:
        name = unique_name()
        slot = client.keyslot(f"qa:{{{name}}}:ready")
        node = client.nodes_manager.get_node_from_slot(slot).name
        by_node.setdefault(node, name)
    return list(by_node.values())


async def test_a_worker_serves_queues_on_every_master(
    client: redis.asyncio.RedisCluster, redis_url: str
) -> None:
    await client.initialize()
    names = _names_on_distinct_masters(client, 3)
    queues = [qa.Queue(redis_url, name=name) for name in names]
    done: list[str] = []
    for q in queues:

        @q.task(name="work")
        async def work(label: str) -> str:
            done.append(label)
            return label

    try:
        async with qa.Worker(queues, concurrency=4, **FAST) as worker:
            await anyio.sleep(0.3)  # idle: blocked on every master at once
            handles = [await q.enqueue("work", q.name) for q in queues]
            with anyio.fail_after(10):
                results = [await h.result(timeout=10) for h in handles]
            assert worker is not None
        assert sorted(results) == sorted(names)
        assert sorted(done) == sorted(names)
    finally:
        for q in queues:
            await q.close()


async def test_the_function_library_is_loaded_again_on_a_master_that_lost_it(
    client: redis.asyncio.RedisCluster, redis_url: str
) -> None:
    await client.initialize()
    name = _names_on_distinct_masters(client, 1)[0]
    async with qa.Queue(redis_url, name=name) as q:

        @q.task(name="noop")
        async def noop() -> None:
            return None

        await q.enqueue("noop")
        await client.execute_command("FUNCTION FLUSH", target_nodes=client.get_primaries())
        await q.enqueue("noop")  # "function not found" on its master: loaded on every master
        for master in client.get_primaries():
            libraries = await client.execute_command(
                "FUNCTION LIST", "LIBRARYNAME", LIBRARY.name, target_nodes=master
            )
            assert libraries, master.name
        assert (await q.stats()).ready == 2


async def test_admin_lists_the_queues_of_every_master_with_their_counts(
    client: redis.asyncio.RedisCluster, redis_url: str
) -> None:
    await client.initialize()
    names = _names_on_distinct_masters(client, 3)
    queues = [qa.Queue(redis_url, name=name) for name in names]
    try:
        for count, q in enumerate(queues, start=1):
            await q.enqueue_many([q.call("job", i) for i in range(count)])
        listed = {s.queue: s.ready for s in await qa.Admin(queues[0]).queues()}
        assert {name: listed.get(name) for name in names} == dict(
            zip(names, [1, 2, 3], strict=True)
        )
    finally:
        for q in queues:
            await q.close()


async def test_callers_past_max_connections_wait_for_a_free_one(redis_url: str) -> None:
    async with qa.Queue(redis_url, name=unique_name(), max_connections=2) as queue:
        handles = await queue.enqueue_many([queue.call("t.noop") for _ in range(50)])
        # job_status is one pipeline per call, not coalesced: 600 at once on two connections.
        statuses = await asyncio.gather(*(queue.job_status(h.id) for h in handles * 12))
        assert set(statuses) == {qa.JobStatus.READY}


async def test_a_cluster_caller_that_waits_past_pool_timeout_is_told_why(redis_url: str) -> None:
    async with qa.Queue(
        redis_url, name=unique_name(), max_connections=1, pool_timeout=0.2
    ) as queue:
        await queue.ping()
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.client.blpop, [f"{queue.key_prefix}nothing"], 1)
            await anyio.sleep(0.05)
            with pytest.raises(qa.ConnectionError, match="no Redis connection became free"):
                await queue.job_status("some-id")


async def test_a_node_connection_torn_down_under_a_call_is_a_lost_connection(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What redis-py's cluster client raises when a failover tears a node's connection down
    under it (seen on 5.0.8 and 8.1), injected once: callers get a connection error, which
    workers back off from, not an AttributeError that ends them."""
    async with qa.Queue(redis_url, name=unique_name()) as queue:
        await queue.ping()
        execute = redis.asyncio.cluster.ClusterNode.execute_command
        calls = 0

        async def torn_down_once(node: object, *args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise AttributeError("'NoneType' object has no attribute 'writelines'")
            return await execute(node, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(redis.asyncio.cluster.ClusterNode, "execute_command", torn_down_once)
        with pytest.raises(qa.ConnectionError, match="went away during the call"):
            await queue.stats()
        assert (await queue.stats()).ready == 0  # the next call goes through
