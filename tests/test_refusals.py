"""A worker survives every refusal of the server (out of memory, read-only after a failover):
it logs what was refused and what to do, backs off, and records every job once."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer
from tests.conftest import unique_name
from tests.helpers import FAST

pytestmark = pytest.mark.anyio


@pytest.fixture
async def admin(private_server: EmbeddedServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(private_server.url)
    yield client
    await client.aclose()


async def out_of_memory(admin: redis.asyncio.Redis) -> None:
    await admin.config_set("maxmemory", "1")  # every write is now refused with OOM


async def memory_back(admin: redis.asyncio.Redis) -> None:
    await admin.config_set("maxmemory", "0")


async def read_only(admin: redis.asyncio.Redis) -> None:
    # A replica of a primary that does not exist: it keeps its data and refuses writes.
    await admin.execute_command("REPLICAOF", "127.0.0.1", "1")


async def writable(admin: redis.asyncio.Redis) -> None:
    await admin.execute_command("REPLICAOF", "NO", "ONE")


async def no_replicas(admin: redis.asyncio.Redis) -> None:
    await admin.config_set("min-replicas-to-write", "1")  # there is none: writes refused


async def replicas_enough(admin: redis.asyncio.Redis) -> None:
    await admin.config_set("min-replicas-to-write", "0")


@pytest.mark.parametrize(
    ("refuse", "accept", "said"),
    [
        pytest.param(out_of_memory, memory_back, "out of memory", id="oom"),
        pytest.param(read_only, writable, "read-only replica", id="readonly"),
        pytest.param(no_replicas, replicas_enough, "not enough replicas", id="noreplicas"),
    ],
)
async def test_worker_survives_a_refusal_and_records_every_job_once(
    private_server: EmbeddedServer,
    admin: redis.asyncio.Redis,
    caplog: pytest.LogCaptureFixture,
    refuse: object,
    accept: object,
    said: str,
) -> None:
    caplog.set_level(logging.INFO, logger="queue_async")
    runs: Counter[int] = Counter()
    async with qa.Queue(private_server.url, name=unique_name()) as queue:

        @queue.task
        async def work(i: int) -> int:
            runs[i] += 1
            await anyio.sleep(0.2)
            return i

        handles = [await work.enqueue(i) for i in range(20)]
        async with qa.Worker(queue, concurrency=5, **{**FAST, "reconnect_max": 0.2}) as worker:
            await anyio.sleep(0.1)  # the first five run
            await refuse(admin)  # type: ignore[operator]
            await anyio.sleep(1.0)  # their completions and the next leases are refused
            assert worker.running
            await accept(admin)  # type: ignore[operator]
            with anyio.fail_after(20):
                results = [await h.result(timeout=20) for h in handles]
            assert worker.running
    assert results == list(range(20))
    assert set(runs.values()) == {1}, runs
    assert said in caplog.text
    assert "Redis is reachable again" in caplog.text


@pytest.mark.parametrize(
    ("refuse", "accept", "error", "said"),
    [
        pytest.param(out_of_memory, memory_back, qa.BrokerError, "out of memory", id="oom"),
        # An old master back as a replica after a failover: the same call succeeds once a
        # primary answers (behind Sentinel, on the new master), so it is an outage to repeat.
        pytest.param(
            read_only, writable, qa.BrokerConnectionError, "read-only replica", id="readonly"
        ),
    ],
)
async def test_enqueue_while_refused_says_so_and_writes_nothing(
    private_server: EmbeddedServer,
    admin: redis.asyncio.Redis,
    refuse: object,
    accept: object,
    error: type[Exception],
    said: str,
) -> None:
    async with qa.Queue(private_server.url, name=unique_name()) as queue:
        await refuse(admin)  # type: ignore[operator]
        try:
            with pytest.raises(error, match=said) as caught:
                await queue.enqueue("some.task", 1)
        finally:
            await accept(admin)  # type: ignore[operator]
        assert isinstance(caught.value, qa.BrokerConnectionError) is (
            error is qa.BrokerConnectionError
        )
        assert (await queue.stats()).ready == 0
        await queue.enqueue("some.task", 2)
        assert (await queue.stats()).ready == 1


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-random"])
async def test_a_server_that_may_evict_keys_is_refused_unless_allowed(
    private_server: EmbeddedServer, admin: redis.asyncio.Redis, policy: str
) -> None:
    await admin.config_set("maxmemory-policy", policy)
    async with qa.Queue(private_server.url, name=unique_name()) as queue:
        with pytest.raises(qa.ConfigurationError, match=f"maxmemory-policy is '{policy}'"):
            await queue.enqueue("some.task")
        assert (await queue.stats()).ready == 0
        with pytest.raises(qa.ConfigurationError, match="noeviction"):
            await qa.Worker(queue, **FAST).run(burst=True, handle_signals=False)
    async with qa.Queue(private_server.url, name=unique_name(), allow_eviction=True) as queue:

        @queue.task
        async def fine() -> int:
            return 1

        handle = await fine.enqueue()
        await qa.Worker(queue, **FAST).run(burst=True, handle_signals=False)
        assert await handle.result(timeout=5) == 1


async def test_a_server_that_hides_its_policy_is_used_with_a_warning(
    private_server: EmbeddedServer, admin: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await admin.execute_command(
        "ACL", "SETUSER", "app", "on", ">secret", "~*", "&*", "+@all", "-config"
    )
    url = private_server.url.replace("redis://", "redis://app:secret@")
    async with qa.Queue(url, name=unique_name()) as queue:
        handle = await queue.enqueue("some.task")
        assert (await handle.info()).status is qa.JobStatus.READY
    assert "cannot read the server's maxmemory-policy" in caplog.text


async def test_an_idle_worker_whose_wait_a_demotion_ends_counts_an_outage_and_goes_on(
    private_server: EmbeddedServer,
    admin: redis.asyncio.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A master made a replica (a failover) ends its blocked calls with UNBLOCKED.
    caplog.set_level(logging.INFO, logger="queue_async")
    async with qa.Queue(private_server.url, name=unique_name()) as queue:

        @queue.task
        async def work() -> int:
            return 1

        async with qa.Worker(queue, **{**FAST, "max_idle_wait": 5.0, "reconnect_max": 0.2}):
            with anyio.fail_after(5):
                while not (await admin.info("clients"))["blocked_clients"]:
                    await anyio.sleep(0.02)  # until the idle worker blocks on the server
            await read_only(admin)
            with anyio.fail_after(5):
                while "stopped being a master" not in caplog.text:
                    await anyio.sleep(0.02)
            await writable(admin)
            handle = await work.enqueue()
            assert await handle.result(timeout=10) == 1
    assert "Redis unreachable (Redis refused waiting for jobs" in caplog.text
