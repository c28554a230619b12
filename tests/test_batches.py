"""enqueue_many of any size: bounded transactions, and an honest error part way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer
from queue_async.producer import batches
from tests.conftest import unique_name

pytestmark = pytest.mark.anyio


def test_jobs_are_cut_into_chunks_by_count_and_bytes() -> None:
    small = [b"x" * 10] * 2500
    assert [end for end, _ in batches.chunks(small)] == [1000, 2000, 2500]
    big = [b"x" * 400_000] * 5  # 1 MiB per chunk at most: two of these, then a third
    assert [end for end, _ in batches.chunks(big)] == [2, 4, 5]
    huge = [b"x" * 3_000_000, b"y"]  # one job larger than a chunk goes alone
    assert [end for end, _ in batches.chunks(huge)] == [1, 2]


def test_chunks_are_grouped_into_bounded_transactions() -> None:
    chunks = batches.chunks([b"x" * 10] * 12_000)
    groups = batches.transactions(chunks)
    assert [len(g) for g in groups] == [5, 5, 2]
    heavy = batches.chunks([b"x" * 900_000] * 20)
    assert all(sum(len(c) for _, c in g) <= 9 << 20 for g in batches.transactions(heavy))


async def test_a_batch_over_one_transaction_lands_whole_and_in_order(queue: qa.Queue) -> None:
    handles = await queue.enqueue_many([queue.call("t.noop", i) for i in range(12_000)])
    assert len({h.id for h in handles}) == 12_000
    stats = await queue.stats()
    assert stats.ready == 12_000


@pytest.fixture
async def admin(private_server: EmbeddedServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(private_server.url)
    yield client
    await client.config_set("maxmemory", "0")
    await client.aclose()


async def test_a_batch_failing_part_way_says_what_landed_and_can_be_finished_without_duplicates(
    private_server: EmbeddedServer, admin: redis.asyncio.Redis
) -> None:
    async with qa.Queue(private_server.url, name=unique_name()) as queue:
        await queue.ping()
        used = int((await admin.info("memory"))["used_memory"])
        # Room for the first transaction (5,000 jobs of ~500 B, ~3 MB with the request
        # buffer) to run, not for the second to start.
        await admin.config_set("maxmemory", str(used + 4_000_000))
        specs = [queue.call("t.work", "p" * 400, i) for i in range(12_000)]
        with pytest.raises(qa.EnqueueIncomplete) as caught:
            await queue.enqueue_many(specs)
        error = caught.value
        assert isinstance(error, qa.BrokerError)
        assert (len(error.landed), len(error.unsure), len(error.not_sent)) == (5000, 5000, 2000)
        assert "5000 of 12000 jobs were enqueued" in str(error)
        # Lifted before reading: right after the refusal the server may still count the
        # refused batch's request against the limit, and refuse the read too (Redis 7.0).
        await admin.config_set("maxmemory", "0")
        assert (await queue.stats()).ready == 5000
        # The rest, with their ids fixed: repeating it twice still adds each job once.
        await queue.enqueue_many(error.remaining)
        await queue.enqueue_many(error.remaining)
        assert (await queue.stats()).ready == 12_000
        ids = {h.id for h in error.landed} | {s.options.job_id for s in error.remaining}  # type: ignore[union-attr]
        assert len(ids) == 12_000
