"""How the scripts reach the server: one function library by FCALL where the server runs
functions, else each script by EVALSHA; either way reloaded when the server forgets them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

import queue_async as qa
from queue_async.broker.scripts import LIBRARY, SCRIPTS
from queue_async.embedded import EmbeddedServer
from queue_async.exceptions import BrokerError
from tests.lua._support import enqueue, job, lease

pytestmark = pytest.mark.anyio


async def _library_names(client: redis.asyncio.Redis) -> list[str]:
    listed = await client.function_list()
    return [
        _text(dict(zip(entry[::2], entry[1::2], strict=True))[b"library_name"]) for entry in listed
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _each_call_survives(queue: qa.Queue, forget: Callable[[], Awaitable[Any]]) -> None:
    """A single enqueue, a batch and a lease, each one after the server forgot the scripts."""
    assert await enqueue(queue, "before") == [1]
    await forget()
    assert await enqueue(queue, "single") == [1]
    await forget()
    assert await queue._broker.scripts.enqueue_chunks([job("c1"), job("c2")]) == [1, 1]
    await forget()
    assert (await lease(queue, 10)).ids == ["before", "single", "c1", "c2"]


async def test_scripts_run_as_one_function_library_named_after_its_source(
    private_server: EmbeddedServer,
) -> None:
    async with qa.Queue(private_server.url, name="fn") as queue:
        assert queue._broker.scripts.functions is None
        assert await enqueue(queue, "a") == [1]
        assert queue._broker.scripts.functions is True
        assert await _library_names(queue.client) == [LIBRARY.name]
        # Nothing went by EVALSHA: the script cache is empty.
        shas = [script.sha for script in SCRIPTS.values()]
        assert await queue.client.script_exists(*shas) == [False] * len(shas)
        assert (await lease(queue, 10)).ids == ["a"]


async def test_functions_reload_after_the_server_forgets_them(
    private_server: EmbeddedServer,
) -> None:
    async with qa.Queue(private_server.url, name="reload") as queue:
        await _each_call_survives(queue, queue.client.function_flush)
        assert await _library_names(queue.client) == [LIBRARY.name]


async def test_a_batch_loads_the_library_when_it_is_the_first_call(
    private_server: EmbeddedServer,
) -> None:
    async with qa.Queue(private_server.url, name="first") as queue:
        assert await queue._broker.scripts.enqueue_chunks([job("c1"), job("c2")]) == [1, 1]
        assert queue._broker.scripts.functions is True
        assert (await lease(queue, 10)).ids == ["c1", "c2"]


async def test_without_functions_every_script_goes_by_evalsha_and_reloads(
    private_server: EmbeddedServer,
) -> None:
    """A user whose ACL denies FCALL and FUNCTION stands in for Redis 5 and 6, which have
    neither: both refuse the first FCALL, and the queue falls back to EVALSHA."""
    async with redis.asyncio.Redis.from_url(private_server.url) as admin:
        await admin.acl_setuser(
            "old",
            enabled=True,
            passwords=["+secret"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-fcall", "-function"],
        )
    url = f"redis://old:secret@127.0.0.1:{private_server.port}/0"
    async with qa.Queue(url, name="old") as queue:
        await _each_call_survives(queue, queue.client.script_flush)
        assert queue._broker.scripts.functions is False
        # One script found missing reloads them all: the enqueue a producer in another
        # language calls by its published sha comes back with the worker's own scripts.
        assert await queue._broker.scripts.publish_entry() == f"evalsha {SCRIPTS['enqueue'].sha}"
        await queue.client.script_flush()
        await queue._broker.scripts.recover(3, 60_000, 100)
        shas = [script.sha for script in SCRIPTS.values()]
        assert await queue.client.script_exists(*shas) == [True] * len(shas)
    async with redis.asyncio.Redis.from_url(private_server.url) as admin:
        assert await admin.function_list() == []


async def test_a_failing_chunk_in_a_batch_raises_broker_error(queue: qa.Queue) -> None:
    with pytest.raises(BrokerError, match="malformed job batch"):
        await queue._broker.scripts.enqueue_chunks([job("ok"), b"\xff not packed"])
