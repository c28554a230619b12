"""tests/test_shards.py, rerun on the local cluster (see conftest.py), and what only a
cluster shows of a sharded queue: its shards on every master, each served there."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio

import queue_async as qa
from tests.conftest import unique_name
from tests.helpers import FAST
from tests.test_shards import *  # noqa: F403 - the point: the same tests, another server

pytestmark = pytest.mark.anyio


async def test_three_shards_land_on_the_three_masters_and_all_are_served(
    client: redis.asyncio.RedisCluster, redis_url: str
) -> None:
    await client.initialize()
    async with qa.Queue(redis_url, name=unique_name(), shards=3) as queue:

        @queue.task
        async def work(n: int) -> int:
            return n

        masters = {
            client.nodes_manager.get_node_from_slot(client.keyslot(shard._broker.keys.ready)).name
            for shard in queue.shards
        }
        assert len(masters) == 3
        handles = await queue.enqueue_many([work.call(n) for n in range(90)])
        worker = qa.Worker(queue, concurrency=20, **FAST)
        with anyio.fail_after(30):
            await worker.run(burst=True, handle_signals=False)
        assert [await h.result(timeout=5) for h in handles] == list(range(90))
        assert [(await s.stats()).processed > 0 for s in queue.shards] == [True] * 3
