"""The web path as users run it: hundreds of concurrent callers, default settings, idle workers
left alone past every timeout, and the client's own socket timeouts."""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import redis.asyncio
import redis.exceptions

import queue_async as qa
from queue_async.producer import waiters
from tests.conftest import unique_name
from tests.helpers import FAST

pytestmark = pytest.mark.anyio


async def connected_clients(client: redis.asyncio.Redis) -> int:
    info = await client.info("clients")
    return int(info["connected_clients"])


class ConnectionSampler:
    """The most connections the server had while the block ran, sampled every 20 ms."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.peak = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, await connected_clients(self.client))
            await anyio.sleep(0.02)


async def test_a_thousand_concurrent_enqueues_wait_for_connections_instead_of_failing(
    queue: qa.Queue, client: redis.asyncio.Redis
) -> None:
    @queue.task
    async def noop(i: int) -> int:
        return i

    baseline = await connected_clients(client)
    sampler = ConnectionSampler(client)
    handles: list[qa.JobHandle[int]] = []

    async def one(i: int) -> None:
        handles.append(await noop.enqueue(i))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sampler.run)
        async with anyio.create_task_group() as callers:
            for i in range(1000):
                callers.start_soon(one, i)
        tg.cancel_scope.cancel()

    assert len({h.id for h in handles}) == 1000
    assert (await queue.stats()).ready == 1000
    # The producers' pool is bounded (20 by default) whatever the number of callers.
    assert sampler.peak - baseline <= 20 + 1


async def test_a_thousand_concurrent_result_waits_share_one_connection(
    queue: qa.Queue, client: redis.asyncio.Redis
) -> None:
    @queue.task
    async def double(i: int) -> int:
        return 2 * i

    handles = [await double.enqueue(i) for i in range(1000)]
    results: dict[int, int] = {}
    sampler = ConnectionSampler(client)

    async def wait(i: int) -> None:
        results[i] = await handles[i].result(timeout=60)

    baseline = await connected_clients(client)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sampler.run)
        async with anyio.create_task_group() as waiters:
            for i in range(1000):
                waiters.start_soon(wait, i)
            with anyio.fail_after(10):
                while queue._waiters.waiting < 1000:
                    await anyio.sleep(0.01)
            waiting_peak = sampler.peak
            async with qa.Worker(queue, concurrency=100):
                with anyio.fail_after(60):
                    while len(results) < 1000:
                        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()

    assert results == {i: 2 * i for i in range(1000)}
    # 1,000 waiters: the one subscription, plus producer connections for watch.lua.
    assert waiting_peak - baseline <= 20 + 1
    assert queue._waiters.waiting == 0


@contextlib.asynccontextmanager
async def awaited_echo(
    queue: qa.Queue,
) -> AsyncIterator[tuple[qa.JobHandle[str], list[str]]]:
    """A job enqueued, and a ``result()`` call waiting for it in the background: its result
    lands in the list. On leaving, a worker runs the job, and the wait is given 10 s to end."""

    @queue.task
    async def echo(x: str) -> str:
        return x

    handle = await echo.enqueue("hi")
    got: list[str] = []

    async def wait() -> None:
        got.append(await handle.result(timeout=20))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        yield handle, got
        worker = qa.Worker(queue, **FAST)
        with anyio.fail_after(10):
            await worker.run(burst=True, handle_signals=False)
        with anyio.fail_after(10):
            while not got:
                await anyio.sleep(0.01)


async def test_result_hears_of_an_end_announced_while_its_subscription_was_down(
    queue: qa.Queue, client: redis.asyncio.Redis
) -> None:
    async with awaited_echo(queue) as (_, got):
        with anyio.fail_after(5):
            while queue._waiters.waiting < 1:
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)  # let result() reach its wait after watch.lua
        # Cut the subscription, then finish the job at once: the announcement is published
        # while nobody listens (the subscriber waits before it reconnects).
        assert await client.client_kill_filter(_type="pubsub") >= 1
    assert got == ["hi"]


async def test_result_sees_an_end_nobody_announced_within_the_recheck_interval(
    queue: qa.Queue, client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a rolling upgrade: a worker of an earlier version finishes the job without
    # announcing it on the channel this version listens to.
    monkeypatch.setattr(waiters, "RECHECK_AFTER", 0.3)

    async with awaited_echo(queue) as (handle, got):
        with anyio.fail_after(5):
            while not await client.hexists(f"{queue.key_prefix}watched", handle.id):
                await anyio.sleep(0.01)
        await client.hdel(f"{queue.key_prefix}watched", handle.id)  # no announcement, then
    assert got == ["hi"]


async def test_keep_result_zero_gives_not_found_whether_awaited_before_or_after_the_end(
    queue: qa.Queue,
) -> None:
    @queue.task(keep_result=0)
    async def quiet() -> int:
        return 1

    early = await quiet.enqueue()
    late = await quiet.enqueue()
    async with anyio.create_task_group() as tg:
        errors: list[BaseException] = []

        async def wait() -> None:
            try:
                await early.result(timeout=20)
            except qa.JobNotFound as exc:
                errors.append(exc)

        tg.start_soon(wait)
        with anyio.fail_after(5):
            while queue._waiters.waiting < 1:
                await anyio.sleep(0.01)
        worker = qa.Worker(queue, **FAST)
        await worker.run(burst=True, handle_signals=False)
    assert len(errors) == 1 and "not kept" in str(errors[0])
    with pytest.raises(qa.JobNotFound, match="not kept"):
        await late.result(timeout=5)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers (the kernel completes the
    handshake from the listen backlog; nothing reads)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(100)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


async def test_enqueue_to_a_silent_server_fails_within_the_default_command_timeout(
    silent_server: str,
) -> None:
    async with qa.Queue(silent_server, name=unique_name()) as queue:

        @queue.task
        async def noop() -> None: ...

        started = time.monotonic()
        with anyio.fail_after(30), pytest.raises(qa.ConnectionError, match="did not answer"):
            await noop.enqueue()
        took = time.monotonic() - started
    # The README's figure: one command_timeout (5 s), not retried.
    assert 4.5 <= took < 7


async def test_a_shorter_command_timeout_fails_sooner_and_names_the_operation(
    silent_server: str,
) -> None:
    async with qa.Queue(
        silent_server, name=unique_name(), command_timeout=0.3, allow_eviction=True
    ) as queue:
        started = time.monotonic()
        with pytest.raises(qa.ConnectionError, match="while enqueueing a job") as caught:
            await queue.enqueue("some.task")
        assert time.monotonic() - started < 2
        assert ".lua" not in str(caught.value)


def _commands(sock: socket.socket) -> Iterator[list[bytes]]:
    """The commands a client sends, as RESP arrays of bulk strings, until it hangs up."""
    buffer = b""

    def need(n: int) -> bytes:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError
            buffer += chunk
        taken, buffer = buffer[:n], buffer[n:]
        return taken

    def line() -> bytes:
        nonlocal buffer
        while b"\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError
            buffer += chunk
        taken, _, buffer = buffer.partition(b"\r\n")
        return taken

    with contextlib.suppress(EOFError, OSError):
        while True:
            count = int(line()[1:])
            yield [need(int(line()[1:]) + 2)[:-2] for _ in range(count)]


@pytest.fixture
def deaf_server() -> Iterator[str]:
    """A server that answers the commands a connection sends as it opens (CLIENT SETINFO and
    the like) and reads nothing after the first other one: a large command fills the socket
    buffers and cannot be written."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(10)
        accepted: list[socket.socket] = []

        def serve(conn: socket.socket) -> None:
            for command in _commands(conn):
                if command[0].upper() not in (b"CLIENT", b"HELLO", b"SELECT", b"AUTH", b"PING"):
                    return  # reads nothing more; the connection stays open
                conn.sendall(b"+OK\r\n")

        def accept() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = sock.accept()
                    accepted.append(conn)
                    threading.Thread(target=serve, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
        for conn in accepted:
            conn.close()


async def test_a_write_the_server_does_not_take_fails_within_the_command_timeout(
    deaf_server: str,
) -> None:
    async with qa.Queue(deaf_server, name=unique_name(), command_timeout=0.3) as queue:
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(redis.exceptions.TimeoutError, match="writing"):
            await queue.client.set("big", b"x" * 64 * 2**20)
        assert time.monotonic() - started < 3
        # Cut off mid-write: the connection is closed, never handed out again.
        pool = queue.client.connection_pool
        assert all(not c.is_connected for c in pool._available_connections)  # type: ignore[attr-defined]


async def test_an_exhausted_pool_says_so_and_how_to_fix_it(redis_url: str) -> None:
    async with qa.Queue(redis_url, name=unique_name(), max_connections=1, pool_timeout=0.2) as q:
        async with anyio.create_task_group() as tg:
            tg.start_soon(q.client.blpop, [f"{q._broker.keys.prefix}nothing"], 1)
            await anyio.sleep(0.1)
            with pytest.raises(qa.ConnectionError, match="max_connections") as caught:
                await q.enqueue("some.task")
        assert "cannot reach" not in str(caught.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"max_connections": 0},
        {"pool_timeout": 0},
        {"connect_timeout": -1},
        {"command_timeout": "5"},
    ],
)
def test_invalid_connection_settings_raise_configuration_error(
    redis_url: str, settings: dict[str, object]
) -> None:
    with pytest.raises(qa.ConfigurationError, match=next(iter(settings))):
        qa.Queue(redis_url, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["localhost:6379", "http://localhost", "redis://host:port/0"])
def test_a_malformed_url_raises_configuration_error(url: str) -> None:
    with pytest.raises(qa.ConfigurationError, match="Redis URL"):
        qa.Queue(url)


async def test_an_idle_worker_outlasts_a_short_client_socket_timeout_without_false_alarms(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A user's ``?socket_timeout=1`` must not cut the worker's 5 s blocking wait."""
    caplog.set_level(logging.INFO, logger="queue_async")
    async with qa.Queue(f"{redis_url}?socket_timeout=1", name=unique_name()) as queue:

        @queue.task
        async def ping() -> str:
            return "pong"

        async with qa.Worker(queue):
            await anyio.sleep(6.5)  # idle past the socket timeout and max_idle_wait (5 s)
            started = time.monotonic()
            handle = await ping.enqueue()
            assert await handle.result(timeout=5) == "pong"
            assert time.monotonic() - started < 0.5
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_a_worker_on_a_passed_in_client_with_a_short_socket_timeout_stays_quiet(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="queue_async")
    user_client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=1)
    try:
        queue = qa.Queue(user_client, name=unique_name())

        @queue.task
        async def ping() -> str:
            return "pong"

        async with qa.Worker(queue):
            await anyio.sleep(2.5)
            handle = await ping.enqueue()
            assert await handle.result() == "pong"  # no timeout: the waiter outlives it too
        await queue.close()
    finally:
        await user_client.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.parametrize("how", ["backoff", "defer"])
async def test_a_retry_starts_on_time_on_a_quiet_queue(queue: qa.Queue, how: str) -> None:
    """Default worker settings (a 5 s idle wait): the retry wakes the idle worker."""
    tries: list[float] = []

    @queue.task(retries=5, backoff_base=0.05, backoff_cap=0.05)
    async def flaky() -> str:
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise qa.Retry(defer=0.1) if how == "defer" else RuntimeError("not yet")
        return "ok"

    async with qa.Worker(queue):
        await anyio.sleep(0.3)  # the worker is idle, blocked on Redis
        handle = await flaky.enqueue()
        assert await handle.result(timeout=10) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    # Due within the backoff (at most 0.05 s) or the defer (0.1 s); started within a few ms
    # of it, not at the server's next 100 ms tick (nor after the 5 s idle wait).
    assert len(gaps) == 2, gaps
    if how == "defer":
        assert all(0.1 <= gap < 0.16 for gap in gaps), gaps
    else:
        assert all(gap < 0.11 for gap in gaps), gaps


async def test_a_delayed_job_starts_within_milliseconds_of_its_due_time(queue: qa.Queue) -> None:
    started: list[float] = []

    @queue.task
    async def later() -> None:
        started.append(time.monotonic())

    async with qa.Worker(queue):
        await anyio.sleep(0.3)  # idle, blocked on Redis for up to 5 s
        for delay in (0.25, 0.4):
            started.clear()
            enqueued = time.monotonic()
            handle = await later.options(delay=delay).enqueue()
            await handle.result(timeout=5)
            assert delay <= started[0] - enqueued < delay + 0.05


async def test_a_delayed_job_past_every_timeout_runs_in_burst_mode(queue: qa.Queue) -> None:
    """A job due in 6 s: longer than redis-py 8's socket timeout and max_idle_wait."""

    @queue.task
    async def later() -> str:
        return "done"

    handle = await later.options(delay=6).enqueue()
    started = time.monotonic()
    worker = qa.Worker(queue)
    with anyio.fail_after(20):
        await worker.run(burst=True, handle_signals=False)
    assert 5.9 <= time.monotonic() - started < 8
    assert await handle.result(timeout=1) == "done"


async def test_a_passed_in_client_with_a_small_failing_pool_still_lets_callers_wait(
    redis_url: str,
) -> None:
    """A pool that raises past its size is the user's; the queue's producers wait instead."""
    pool = redis.asyncio.ConnectionPool.from_url(redis_url, max_connections=2)
    user_client = redis.asyncio.Redis(connection_pool=pool)
    try:
        async with qa.Queue(user_client, name=unique_name()) as queue:
            handles = await _gather(queue.enqueue("t.noop", i) for i in range(300))
            assert len({h.id for h in handles}) == 300
        assert await user_client.ping()  # the user's client is left open
    finally:
        await user_client.aclose()
        await pool.disconnect()


async def _gather(calls: Iterator[Any]) -> list[Any]:
    results: list[Any] = []

    async def one(call: Any) -> None:
        results.append(await call)

    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(one, call)
    return results


async def test_a_write_after_a_failed_health_check_goes_out_on_the_new_connection(
    redis_url: str, client: redis.asyncio.Redis
) -> None:
    """With ``health_check_interval``, redis-py PINGs a connection idle that long before the
    next command, and makes it again if the PING fails; the command then goes out on that new
    connection (not on the dead one, which would fail it and cost a second reconnection)."""
    source = redis.asyncio.Redis.from_url(redis_url, health_check_interval=0.2)
    async with qa.Queue(source, name=unique_name()) as queue:
        first_id = await queue.client.client_id()
        await client.client_kill_filter(_id=first_id)
        await anyio.sleep(0.3)  # past the interval: the next command checks first
        before = int((await client.info("stats"))["total_connections_received"])
        assert await queue.client.echo("again") == b"again"
        after = int((await client.info("stats"))["total_connections_received"])
        assert after - before == 1
    await source.aclose()
