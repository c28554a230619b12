"""Every user-facing error path and fault of the core, against real servers.

Encoding errors at enqueue (nothing written), jobs no worker can run (unknown task, garbage
payload, unencodable result), handlers that raise what should stop a process, an unreachable
or restarting server, invalid options and settings, and the errors of waiting for results.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import anyio
import pydantic
import pytest
import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer
from tests.conftest import unique_name
from tests.helpers import FAST, drain, keys_of, set_payload

pytestmark = pytest.mark.anyio


@pytest.fixture
async def private_queue(private_server: EmbeddedServer) -> AsyncIterator[qa.Queue]:
    """A queue on the test's own server, which the test may kill and restart."""
    queue = qa.Queue(private_server.url, name=unique_name())
    yield queue
    await queue.close()


async def dead_ids(queue: qa.Queue) -> set[str]:
    return {member.decode() for member in await queue.client.zrange(queue._broker.keys.dead, 0, -1)}


async def assert_dead(handle: qa.JobHandle[Any], *fragments: str) -> qa.JobFailed:
    """result() raises JobFailed, the job is in the dead set, and the error has every fragment."""
    with anyio.fail_after(15), pytest.raises(qa.JobFailed) as caught:
        await handle.result(timeout=10)
    assert handle.id in await dead_ids(handle.queue)
    assert caught.value.job_id == handle.id
    assert caught.value.error is not None
    for fragment in fragments:
        assert fragment in caught.value.error
    info = await handle.info()
    assert info.status is qa.JobStatus.DEAD
    assert info.error == caught.value.error
    return caught.value


# -- 1. arguments that cannot be encoded -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "culprit"),
    [
        pytest.param((1, object()), {}, "argument 1 (object)", id="object-positional"),
        pytest.param(({1, 2},), {}, "argument 0 (set)", id="set-positional"),
        pytest.param((), {"blob": b"\x00\x01"}, "argument 'blob' (bytes)", id="bytes-keyword"),
        pytest.param(("ok",), {"n": 2**70}, "argument 'n' (int)", id="int-over-64-bits"),
        pytest.param(({1: "non-str key"},), {}, "argument 0 (dict)", id="dict-int-key"),
    ],
)
async def test_unencodable_argument_raises_encode_error_naming_task_and_argument_and_writes_nothing(
    queue: qa.Queue, args: tuple[Any, ...], kwargs: dict[str, Any], culprit: str
) -> None:
    @queue.task(name="billing.charge")
    async def charge(*a: Any, **k: Any) -> None: ...

    with pytest.raises(qa.EncodeError) as caught:
        await charge.enqueue(*args, **kwargs)
    message = str(caught.value)
    assert "billing.charge" in message
    assert culprit in message
    assert isinstance(caught.value, TypeError)
    assert not isinstance(caught.value, qa.PayloadTooLarge)
    assert await keys_of(queue) == set()


async def test_unencodable_argument_by_task_name_and_with_options_writes_nothing(
    queue: qa.Queue,
) -> None:
    @queue.task(name="reports.build")
    async def build(x: Any) -> None: ...

    with pytest.raises(qa.EncodeError, match=r"reports\.build.*argument 0 \(object\)"):
        await queue.enqueue("reports.build", object())
    with pytest.raises(qa.EncodeError, match=r"unknown\.name.*argument 'x' \(set\)"):
        await queue.enqueue("unknown.name", x={1})
    with pytest.raises(qa.EncodeError, match=r"reports\.build.*argument 0 \(bytes\)"):
        await build.options(job_id="fixed-id", delay=5).enqueue(b"raw")
    assert await keys_of(queue) == set()


@pytest.mark.parametrize("size", [10, 2500], ids=["one-chunk", "multi-chunk"])
async def test_enqueue_many_with_one_unencodable_job_writes_nothing_at_all(
    queue: qa.Queue, size: int
) -> None:
    @queue.task(name="batch.item")
    async def item(x: Any) -> None: ...

    specs = [item.call(i) for i in range(size)]
    specs[size - 3] = item.call(object())  # in the last chunk: earlier chunks must not land
    with pytest.raises(qa.EncodeError, match=r"batch\.item.*argument 0 \(object\)"):
        await queue.enqueue_many(specs)
    assert await keys_of(queue) == set()

    # The same batch without the bad job lands whole.
    specs[size - 3] = item.call(-1)
    handles = await queue.enqueue_many(specs)
    assert len(handles) == size
    assert (await queue.stats()).ready == size


@pytest.mark.parametrize("size", [10, 2500], ids=["one-chunk", "multi-chunk"])
async def test_enqueue_many_with_one_invalid_job_id_writes_nothing_at_all(
    queue: qa.Queue, size: int
) -> None:
    @queue.task
    async def item(x: int) -> None: ...

    specs = [item.call(i) for i in range(size)]
    # Built without going through options() validation, as a hand-made JobSpec could be.
    bad = qa.EnqueueOptions.model_construct(job_id="has space")
    specs[-1] = qa.JobSpec(item.name, (1,), {}, bad, item.task_options)
    with pytest.raises(qa.ConfigurationError, match="job id"):
        await queue.enqueue_many(specs)
    assert await keys_of(queue) == set()


# -- 2. payload over max_payload_bytes ---------------------------------------------------------


async def test_payload_over_max_payload_bytes_raises_payload_too_large_and_writes_nothing(
    redis_url: str,
) -> None:
    async with qa.Queue(redis_url, name=unique_name(), max_payload_bytes=100) as queue:

        @queue.task(name="upload.file")
        async def upload(data: str) -> None: ...

        with pytest.raises(qa.PayloadTooLarge) as caught:
            await upload.enqueue("x" * 200)
        assert isinstance(caught.value, qa.EncodeError)
        message = str(caught.value)
        assert "upload.file" in message and "max_payload_bytes=100" in message
        with pytest.raises(qa.PayloadTooLarge):
            await queue.enqueue("upload.file", data="y" * 200)
        assert await keys_of(queue) == set()

        # Just under the limit is accepted.
        handle = await upload.enqueue("x" * 50)
        assert await handle.status() is qa.JobStatus.READY
        await queue.client.delete(*await keys_of(queue))


@pytest.mark.parametrize("size", [10, 2500], ids=["one-chunk", "multi-chunk"])
async def test_enqueue_many_with_one_payload_too_large_writes_nothing_at_all(
    redis_url: str, size: int
) -> None:
    async with qa.Queue(redis_url, name=unique_name(), max_payload_bytes=100) as queue:

        @queue.task
        async def item(x: Any) -> None: ...

        specs = [item.call(i) for i in range(size)]
        specs[-1] = item.call("z" * 500)
        with pytest.raises(qa.PayloadTooLarge):
            await queue.enqueue_many(specs)
        assert await keys_of(queue) == set()


# -- 3. a task no worker knows -----------------------------------------------------------------


async def test_job_of_unknown_task_goes_to_dead_naming_the_task_and_other_jobs_still_run(
    queue: qa.Queue,
) -> None:
    @queue.task
    async def double(x: int) -> int:
        return 2 * x

    first = await double.enqueue(1)
    orphan = await queue.enqueue("no.such.task", 1, 2, flag=True)
    last = await double.enqueue(3)
    await drain(queue)

    assert await first.result(timeout=5) == 2
    assert await last.result(timeout=5) == 6
    failed = await assert_dead(orphan, "no.such.task", "not registered")
    assert "no.such.task" in str(failed)
    info = await orphan.info()
    assert info.attempts == 1  # never retried: no worker of this queue can run it
    assert (info.args, info.kwargs) == ([1, 2], {"flag": True})
    stats = await queue.stats()
    assert (stats.dead, stats.processed, stats.failed) == (1, 2, 1)


# -- 4. a payload that cannot be decoded -------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\xff\xfe not json at all", id="not-json"),
        pytest.param(b"[1, 2", id="truncated-json"),
        pytest.param(b"null", id="json-null"),
        pytest.param(b"[1, 2]", id="json-pair-of-wrong-types"),
        pytest.param(b'"ab"', id="json-two-char-string"),
        pytest.param(b'{"a": 1, "b": 2}', id="json-object"),
    ],
)
async def test_job_with_garbage_payload_goes_to_dead_and_other_jobs_still_run(
    queue: qa.Queue, garbage: bytes
) -> None:
    @queue.task(retries=3)
    async def echo(x: int) -> int:
        return x

    before = await echo.enqueue(1)
    broken = await echo.enqueue(2)
    after = await echo.enqueue(3)
    await set_payload(queue, broken.id, garbage)
    await drain(queue)

    assert await before.result(timeout=5) == 1
    assert await after.result(timeout=5) == 3
    await assert_dead(broken, "payload cannot be decoded")
    info = await broken.info()
    assert info.attempts == 1  # decoding never gets better: not retried
    assert (info.args, info.kwargs) == ([], {})  # shown empty, not an error


# -- 5. the server cannot be reached -----------------------------------------------------------


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


async def test_enqueue_to_a_port_with_nothing_listening_raises_connection_error_quickly() -> None:
    async with qa.Queue(f"redis://127.0.0.1:{_unused_port()}/0", name=unique_name()) as queue:

        @queue.task
        async def job() -> None: ...

        with anyio.fail_after(10):
            with pytest.raises(qa.ConnectionError) as caught:
                await job.enqueue()
            assert isinstance(caught.value, qa.BrokerConnectionError)
            assert isinstance(caught.value, ConnectionError)
            assert isinstance(caught.value, qa.BrokerError)
            assert "cannot reach Redis" in str(caught.value)
            with pytest.raises(qa.ConnectionError):
                await queue.enqueue_many([job.call() for _ in range(1500)])
            with pytest.raises(qa.ConnectionError):
                await queue.ping()


@pytest.mark.parametrize(
    "operation",
    ["enqueue", "enqueue_many", "result", "info", "status", "cancel", "stats", "ping"],
)
async def test_every_call_on_a_killed_server_raises_connection_error(
    private_server: EmbeddedServer, private_queue: qa.Queue, operation: str
) -> None:
    @private_queue.task
    async def job(x: int) -> int:
        return x

    handle = await job.enqueue(1)  # the pool now holds a connection the kill will break
    private_server.kill()
    calls: dict[str, Callable[[], Any]] = {
        "enqueue": lambda: job.enqueue(2),
        "enqueue_many": lambda: private_queue.enqueue_many([job.call(i) for i in range(3)]),
        "result": lambda: handle.result(timeout=5),
        "info": handle.info,
        "status": handle.status,
        "cancel": handle.cancel,
        "stats": private_queue.stats,
        "ping": private_queue.ping,
    }
    with anyio.fail_after(10), pytest.raises(qa.ConnectionError):
        await calls[operation]()


async def test_same_queue_enqueues_again_once_the_killed_server_is_back(
    private_server: EmbeddedServer, private_queue: qa.Queue
) -> None:
    @private_queue.task
    async def job(x: int) -> int:
        return x

    kept = await job.enqueue(1)
    private_server.kill()
    with anyio.fail_after(10), pytest.raises(qa.ConnectionError):
        await job.enqueue(2)
    private_server.start()

    with anyio.fail_after(10):
        fresh = await job.enqueue(3)
        batch = await private_queue.enqueue_many([job.call(i) for i in range(1500)])
    assert await kept.status() is qa.JobStatus.READY  # written before the kill: kept (AOF)
    assert await fresh.status() is qa.JobStatus.READY
    assert (await private_queue.stats()).ready == 2 + len(batch)


# -- 6. a running worker and a restarting server -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("outage", ["restart", "crash"])
async def test_running_worker_survives_a_server_restart_and_loses_no_job(
    private_server: EmbeddedServer, private_queue: qa.Queue, outage: str
) -> None:
    running = anyio.Event()
    ran: set[int] = set()

    @private_queue.task(backoff_base=0.05)
    async def slow(i: int) -> int:
        running.set()
        await anyio.sleep(0.1)
        ran.add(i)
        return i * 10

    def bounce() -> None:
        if outage == "restart":
            private_server.restart()  # SIGTERM, then start on the same port and files
        else:
            private_server.kill()  # SIGKILL: the append-only file (fsync always) survives
            private_server.start()

    worker = qa.Worker(private_queue, **{**FAST, "concurrency": 2})
    with anyio.fail_after(45):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            before = [await slow.enqueue(i) for i in range(8)]
            await running.wait()  # two jobs run, six wait in ready while the server goes away
            await anyio.to_thread.run_sync(bounce)
            after = [await slow.enqueue(i) for i in range(8, 16)]
            results = [await handle.result(timeout=30) for handle in before + after]
            worker.stop()
    assert results == [i * 10 for i in range(16)]
    assert ran == set(range(16))
    for handle in before + after:
        assert (await handle.info()).status is qa.JobStatus.DONE
    stats = await private_queue.stats()
    assert (stats.ready, stats.scheduled, stats.active, stats.dead) == (0, 0, 0, 0)


@pytest.mark.slow
async def test_job_finishing_during_an_outage_longer_than_its_lease_is_recorded_when_server_is_back(
    private_server: EmbeddedServer, private_queue: qa.Queue
) -> None:
    started = anyio.Event()
    release = anyio.Event()
    runs: list[int] = []

    @private_queue.task
    async def gated() -> str:
        runs.append(1)
        started.set()
        await release.wait()
        return "finished"

    lease = 1.0
    # Heartbeats far more often than the lease loop retries after an outage (reconnect_max).
    worker = qa.Worker(
        private_queue, lease=lease, heartbeat=0.1, max_idle_wait=0.5, reconnect_max=5
    )
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            handle = await gated.enqueue()
            await started.wait()
            private_server.kill()
            release.set()  # the job finishes while the server is down...
            await anyio.sleep(lease * 1.5)  # ...and stays down for longer than the lease
            await anyio.to_thread.run_sync(private_server.start)
            try:
                assert await handle.result(timeout=10) == "finished"
            finally:
                worker.stop()
    assert (await handle.info()).status is qa.JobStatus.DONE


# -- 7. invalid options and settings -----------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"delay": -1}, id="negative-delay"),
        pytest.param({"delay": timedelta(seconds=-0.5)}, id="negative-timedelta-delay"),
        pytest.param({"retries": -1}, id="negative-retries"),
        pytest.param({"priority": 2**20 + 1}, id="priority-too-high"),
        pytest.param({"priority": -(2**20) - 1}, id="priority-too-low"),
        pytest.param({"job_id": ""}, id="empty-job-id"),
        pytest.param({"job_id": "x" * 201}, id="job-id-too-long"),
        pytest.param({"timeout": 0}, id="zero-timeout"),
        pytest.param({"timeout": -3}, id="negative-timeout"),
        pytest.param({"keep_result": -1}, id="negative-keep-result"),
    ],
)
async def test_invalid_enqueue_option_raises_validation_error_at_options(
    queue: qa.Queue, options: dict[str, Any]
) -> None:
    @queue.task
    async def job() -> None: ...

    with pytest.raises(pydantic.ValidationError) as caught:
        job.options(**options)
    assert isinstance(caught.value, ValueError)
    assert next(iter(options)) in str(caught.value)
    assert await keys_of(queue) == set()


@pytest.mark.parametrize(
    "job_id",
    [
        pytest.param("has space", id="space"),
        pytest.param("tab\there", id="tab"),
        pytest.param("new\nline", id="newline"),
        pytest.param("bell\x07", id="control-character"),
    ],
)
async def test_job_id_with_whitespace_or_control_characters_raises_validation_error_at_options(
    queue: qa.Queue, job_id: str
) -> None:
    @queue.task
    async def job() -> None: ...

    with pytest.raises(pydantic.ValidationError, match="job_id"):
        job.options(job_id=job_id)
    assert await keys_of(queue) == set()


@pytest.mark.parametrize(
    "job_id", ["has space", "", "x" * 201, "new\nline"], ids=["space", "empty", "long", "newline"]
)
async def test_a_string_that_cannot_be_a_job_id_names_no_job(queue: qa.Queue, job_id: str) -> None:
    """Ids often come from a request's URL: one that cannot exist is a job that does not."""
    with pytest.raises(qa.JobNotFound, match="job id"):
        queue.job(job_id)
    assert await queue.cancel(job_id) is False
    assert await queue.abort(job_id) is False


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a{b}", id="braces"),
        pytest.param("{tag}", id="only-braces"),
        pytest.param("has space", id="space"),
        pytest.param("", id="empty"),
        pytest.param("q" * 101, id="too-long"),
        pytest.param("tab\t", id="control"),
    ],
)
async def test_invalid_queue_name_or_prefix_raises_configuration_error(
    redis_url: str, name: str
) -> None:
    with pytest.raises(qa.ConfigurationError, match="queue name") as caught:
        qa.Queue(redis_url, name=name)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(qa.ConfigurationError, match="key prefix"):
        qa.Queue(redis_url, name="fine", prefix=name)


async def test_longest_valid_queue_name_is_accepted(redis_url: str) -> None:
    async with qa.Queue(redis_url, name="q" * 100) as queue:
        assert queue.name == "q" * 100


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"retries": -1}, id="negative-retries"),
        pytest.param({"timeout": 0}, id="zero-timeout"),
        pytest.param({"backoff_base": -1}, id="negative-backoff"),
        pytest.param({"keep_result": -1}, id="negative-keep-result"),
        pytest.param({"priority": 2**21}, id="priority-out-of-range"),
        pytest.param({"retry": 3}, id="misspelt-option"),
    ],
)
async def test_invalid_task_option_raises_validation_error_at_decoration(
    queue: qa.Queue, options: dict[str, Any]
) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:

        @queue.task(**options)
        async def job() -> None: ...

    assert isinstance(caught.value, ValueError)
    assert queue.tasks == {}


async def test_two_handlers_under_one_task_name_raise_configuration_error(
    queue: qa.Queue,
) -> None:
    @queue.task(name="same.name")
    async def first() -> None: ...

    with pytest.raises(qa.ConfigurationError, match="already registered"):

        @queue.task(name="same.name")
        async def second() -> None: ...

    assert queue.tasks["same.name"].fn is first.fn


async def test_strict_queue_refuses_unknown_task_name_with_task_not_registered(
    redis_url: str,
) -> None:
    async with qa.Queue(redis_url, name=unique_name(), strict=True) as queue:

        @queue.task(name="known.task")
        async def known() -> None: ...

        with pytest.raises(qa.TaskNotRegistered) as caught:
            await queue.enqueue("unknown.task", 1)
        assert isinstance(caught.value, LookupError)
        assert isinstance(caught.value, ValueError)
        assert "unknown.task" in str(caught.value) and "known.task" in str(caught.value)
        with pytest.raises(qa.TaskNotRegistered):
            queue.call("unknown.task")
        assert await keys_of(queue) == set()


@pytest.mark.parametrize(
    "defer",
    [-1, -0.001, timedelta(seconds=-5), float("nan"), float("inf"), 10**9, "5", True],
    ids=["int", "float", "td", "nan", "inf", "huge", "str", "bool"],
)
def test_retry_with_a_negative_or_endless_defer_raises_configuration_error(
    defer: float | timedelta,
) -> None:
    with pytest.raises(qa.ConfigurationError, match=r"Retry\(defer=...\) takes None"):
        qa.Retry(defer=defer)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"heartbeat": 30, "lease": 30}, id="heartbeat-equals-lease"),
        pytest.param({"heartbeat": 5, "lease": 2}, id="heartbeat-longer-than-lease"),
        pytest.param({"heartbeat": 30}, id="heartbeat-equals-default-lease"),
    ],
)
async def test_worker_settings_with_heartbeat_not_shorter_than_lease_raise_value_error(
    queue: qa.Queue, settings: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        qa.WorkerSettings(**settings)
    with pytest.raises(ValueError, match="heartbeat"):
        qa.Worker(queue, **settings)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"concurrency": 0}, id="zero-concurrency"),
        pytest.param({"lease": 0}, id="zero-lease"),
        pytest.param({"lease_batch": 0}, id="zero-lease-batch"),
        pytest.param({"max_stalls": -1}, id="negative-max-stalls"),
        pytest.param({"shutdown_grace": -1}, id="negative-grace"),
        pytest.param({"concurency": 4}, id="misspelt-setting"),
    ],
)
async def test_invalid_worker_setting_raises_validation_error(
    queue: qa.Queue, settings: dict[str, Any]
) -> None:
    with pytest.raises(pydantic.ValidationError):
        qa.Worker(queue, **settings)


async def test_worker_of_something_that_is_not_a_queue_raises_type_error(redis_url: str) -> None:
    with pytest.raises(TypeError, match="takes a Queue"):
        qa.Worker(redis_url)  # type: ignore[arg-type]


async def test_redis_client_with_decode_responses_raises_configuration_error(
    redis_url: str,
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(qa.ConfigurationError, match="decode_responses=False"):
            qa.Queue(client, name=unique_name())
    finally:
        await client.aclose()


@pytest.mark.parametrize("limit", [0, -1])
async def test_non_positive_max_payload_bytes_raises_configuration_error(
    redis_url: str, limit: int
) -> None:
    with pytest.raises(qa.ConfigurationError, match="max_payload_bytes"):
        qa.Queue(redis_url, name=unique_name(), max_payload_bytes=limit)


async def test_queue_of_something_that_is_not_a_url_or_client_raises_configuration_error() -> None:
    with pytest.raises(qa.ConfigurationError, match=r"Redis URL or a redis\.asyncio\.Redis"):
        qa.Queue(6379, name=unique_name())  # type: ignore[arg-type]


async def test_codec_without_encode_and_decode_raises_configuration_error(redis_url: str) -> None:
    with pytest.raises(qa.ConfigurationError, match="codec"):
        qa.Queue(redis_url, name=unique_name(), codec=object())  # type: ignore[arg-type]


async def test_redis_error_that_is_not_a_connection_error_raises_broker_error(
    queue: qa.Queue,
) -> None:
    await queue.client.set(queue._broker.keys.meta, "not a hash")  # WRONGTYPE for HMGET
    with pytest.raises(qa.BrokerError, match="Redis refused") as caught:
        await queue.stats()
    assert not isinstance(caught.value, qa.BrokerConnectionError)


# -- 8. a result that cannot be encoded --------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_unencodable_result_sends_job_to_dead_and_worker_keeps_going(
    queue: qa.Queue, sync: bool
) -> None:
    runs: list[str] = []

    async def returns_object_async() -> object:
        runs.append("bad")
        return object()

    def returns_object_sync() -> object:
        runs.append("bad")
        return object()

    bad_task = queue.task(name="bad.result", retries=3)(
        returns_object_sync if sync else returns_object_async
    )

    @queue.task
    async def good(x: int) -> int:
        return x + 1

    bad = await bad_task.enqueue()
    fine = await good.enqueue(41)
    await drain(queue)

    assert await fine.result(timeout=5) == 42
    await assert_dead(bad, "result (object) cannot be encoded")
    assert runs == ["bad"]  # the handler ran once: encoding the same value never succeeds
    # The same worker setup still completes jobs after the dead one.
    later = await good.enqueue(1)
    await drain(queue)
    assert await later.result(timeout=5) == 2


# -- 9. waiting for results --------------------------------------------------------------------


async def test_result_of_a_job_that_does_not_exist_raises_job_not_found(queue: qa.Queue) -> None:
    handle = queue.job("never-enqueued")
    with anyio.fail_after(5), pytest.raises(qa.JobNotFound) as caught:
        await handle.result(timeout=1)
    assert caught.value.job_id == "never-enqueued"
    assert isinstance(caught.value, LookupError)
    # Asking must not create the job.
    assert await keys_of(queue) == set()


async def test_info_of_a_job_that_does_not_exist_raises_job_not_found(queue: qa.Queue) -> None:
    with pytest.raises(qa.JobNotFound) as caught:
        await queue.job("x").info()
    assert caught.value.job_id == "x"
    assert await queue.job("x").status() is None


@pytest.mark.parametrize(
    "timeout", [0.2, timedelta(milliseconds=200), 0], ids=["float", "timedelta", "zero"]
)
async def test_result_of_a_job_that_never_runs_raises_job_timeout_in_time(
    queue: qa.Queue, timeout: float | timedelta
) -> None:
    @queue.task
    async def never() -> None: ...

    handle = await never.enqueue()
    start = anyio.current_time()
    with anyio.fail_after(3), pytest.raises(qa.JobTimeout) as caught:
        await handle.result(timeout=timeout)
    elapsed = anyio.current_time() - start
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    assert seconds <= elapsed < seconds + 2
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.job_id == handle.id
    assert await handle.status() is qa.JobStatus.READY  # waiting did not touch the job


async def test_result_of_a_cancelled_job_raises_job_cancelled(queue: qa.Queue) -> None:
    @queue.task
    async def job() -> None: ...

    handle = await job.enqueue()
    assert await handle.cancel() is True
    with anyio.fail_after(5), pytest.raises(qa.JobCancelled) as caught:
        await handle.result(timeout=1)
    assert caught.value.job_id == handle.id


# -- 10. handlers raising what would stop a process --------------------------------------------


def _raise_system_exit() -> None:
    raise SystemExit(3)


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _raise_cancelled_error() -> None:
    raise asyncio.CancelledError


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize(
    ("raiser", "text"),
    [
        pytest.param(_raise_system_exit, "SystemExit", id="SystemExit"),
        pytest.param(_raise_keyboard_interrupt, "KeyboardInterrupt", id="KeyboardInterrupt"),
        pytest.param(_raise_cancelled_error, "CancelledError", id="leaked-CancelledError"),
    ],
)
async def test_handler_raising_a_base_exception_is_retried_then_dead_and_worker_survives(
    queue: qa.Queue, raiser: Callable[[], None], text: str, sync: bool
) -> None:
    attempts: list[int] = []

    async def bad_async(ctx: qa.JobContext) -> None:
        attempts.append(ctx.attempt)
        raiser()

    def bad_sync(ctx: qa.JobContext) -> None:
        attempts.append(ctx.attempt)
        raiser()

    bad = queue.task(name="bad.base", retries=2, backoff_base=0)(bad_sync if sync else bad_async)

    @queue.task
    async def good(x: int) -> int:
        return x * 3

    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            handle = await bad.enqueue()
            failed = await assert_dead(handle, text)
            # The same running worker completes a normal job afterwards.
            assert await (await good.enqueue(5)).result(timeout=10) == 15
            worker.stop()
    assert attempts == [1, 2, 3]
    assert (await handle.info()).attempts == 3
    assert failed.error is not None and "Traceback" in failed.error
    stats = await queue.stats()
    assert (stats.retried, stats.failed, stats.processed) == (2, 1, 1)
