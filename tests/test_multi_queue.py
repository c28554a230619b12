"""One worker serving several queues: strict order, weighted selection, wake-ups, errors."""

from __future__ import annotations

import functools
import time

import anyio
import pytest

import queue_async as qa
from queue_async.embedded import EmbeddedServer
from tests.conftest import unique_name
from tests.helpers import FAST

pytestmark = pytest.mark.anyio


def recording(queue: qa.Queue, label: str, order: list[str]) -> qa.Task[[int], None]:
    @queue.task(name=f"multi.{label}")
    async def job(i: int) -> None:
        order.append(label)

    return job


async def test_strict_order_drains_the_first_queue_first(queue: qa.Queue, second: qa.Queue) -> None:
    order: list[str] = []
    high, low = recording(queue, "high", order), recording(second, "low", order)
    await second.enqueue_many([low.call(i) for i in range(200)])
    await queue.enqueue_many([high.call(i) for i in range(200)])
    worker = qa.Worker([queue, second], strategy="strict", **FAST)
    with anyio.fail_after(20):
        await worker.run(burst=True, handle_signals=False)
    assert order == ["high"] * 200 + ["low"] * 200
    assert ((await queue.stats()).processed, (await second.stats()).processed) == (200, 200)


async def test_weighted_selection_takes_jobs_in_proportion_to_the_weights(
    queue: qa.Queue, second: qa.Queue
) -> None:
    order: list[str] = []
    heavy, light = recording(queue, "heavy", order), recording(second, "light", order)
    await queue.enqueue_many([heavy.call(i) for i in range(3000)])
    await second.enqueue_many([light.call(i) for i in range(3000)])
    # One job per lease call, so that the share of calls is the share of jobs.
    worker = qa.Worker([queue, second], strategy="weighted", weights=[10, 1], lease_batch=1, **FAST)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            while len(order) < 2200:
                await anyio.sleep(0.02)
            worker.stop()
    window = order[:2200]  # both queues still had work all along
    ratio = window.count("heavy") / window.count("light")
    print(f"weighted 10:1 -> observed {ratio:.2f}:1 over {len(window)} jobs")
    assert 7 <= ratio <= 14


async def test_weighted_worker_skips_an_empty_queue_and_drains_the_other(
    queue: qa.Queue, second: qa.Queue
) -> None:
    order: list[str] = []
    recording(queue, "busy", order)
    rare = recording(second, "rare", order)
    await second.enqueue_many([rare.call(i) for i in range(50)])
    worker = qa.Worker([queue, second], strategy="weighted", weights=[100, 1], **FAST)
    with anyio.fail_after(20):
        await worker.run(burst=True, handle_signals=False)
    assert order == ["rare"] * 50


async def test_idle_worker_on_several_queues_wakes_for_any_of_them(
    queue: qa.Queue, second: qa.Queue
) -> None:
    @second.task
    async def late() -> str:
        return "second queue"

    worker = qa.Worker([queue, second], **{**FAST, "max_idle_wait": 30})
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            await anyio.sleep(0.2)  # let it go idle, blocked on both queues
            handle = await late.enqueue()
            assert await handle.result(timeout=3) == "second queue"  # not after 30 s
            worker.stop()


async def test_jobs_from_one_queue_do_not_make_the_worker_forget_the_others_due_time(
    queue: qa.Queue, second: qa.Queue
) -> None:
    @queue.task
    async def later() -> str:
        return "delayed job on the first queue"

    @second.task
    async def now() -> str:
        return "job on the second queue"

    # Long lease and idle wait: nothing but the due time may end the worker's wait early.
    worker = qa.Worker([queue, second], lease=60, heartbeat=10, max_idle_wait=30)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            delayed = await later.options(delay=1.0).enqueue()
            await anyio.sleep(0.2)  # the worker takes the wake-up and waits for the due time
            assert await (await now.enqueue()).result(timeout=3) == "job on the second queue"
            # Leasing from the second queue must not end in a 30 s wait that forgets the
            # first queue's job coming due in a second.
            assert await delayed.result(timeout=3) == "delayed job on the first queue"
            worker.stop()


async def test_jobs_of_each_queue_complete_fail_and_retry_in_their_own_queue(
    queue: qa.Queue, second: qa.Queue
) -> None:
    @queue.task(name="multi.ok")
    async def ok(x: int) -> int:
        return x

    @second.task(name="multi.bad", retries=1, backoff_base=0)
    async def bad() -> None:
        raise ValueError("nope")

    done = await ok.enqueue(5)
    failed = await bad.enqueue()
    worker = qa.Worker([queue, second], **FAST)
    with anyio.fail_after(20):
        await worker.run(burst=True, handle_signals=False)
    assert await done.result(timeout=1) == 5
    with pytest.raises(qa.JobFailed, match="nope"):
        await failed.result(timeout=1)
    first_stats, second_stats = await queue.stats(), await second.stats()
    assert (first_stats.processed, first_stats.dead) == (1, 0)
    assert (second_stats.retried, second_stats.dead) == (1, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": [1]}, "one positive integer per queue"),
        ({"weights": [1, 0]}, "one positive integer per queue"),
        ({"weights": [1, True]}, "one positive integer per queue"),
        ({"strategy": "random"}, "strict' or 'weighted"),
    ],
    ids=["too-few-weights", "zero-weight", "bool-weight", "unknown-strategy"],
)
async def test_invalid_multi_queue_settings_raise_configuration_error(
    queue: qa.Queue, second: qa.Queue, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(qa.ConfigurationError, match=match):
        qa.Worker([queue, second], **kwargs)  # type: ignore[arg-type]


async def test_a_worker_needs_distinct_queues(queue: qa.Queue, redis_url: str) -> None:
    with pytest.raises(qa.ConfigurationError, match="at least one queue"):
        qa.Worker([])
    twin = qa.Queue(redis_url, name=queue.name)
    with pytest.raises(qa.ConfigurationError, match="same queue twice"):
        qa.Worker([queue, twin])
    await twin.close()


async def test_a_worker_serving_queues_on_two_servers_wakes_for_either_at_once(
    queue: qa.Queue, private_server: EmbeddedServer
) -> None:
    """One blocking wait per server: a job on the second server does not wait for the
    first server's idle timeout (nor is it looked for on the wrong server)."""
    async with qa.Queue(private_server.url, name=unique_name()) as elsewhere:

        @elsewhere.task
        async def there() -> str:
            return "there"

        @queue.task
        async def here() -> str:
            return "here"

        async with qa.Worker([queue, elsewhere]):  # default 5 s idle wait
            await anyio.sleep(0.3)
            for task in (there, here, there):
                started = time.monotonic()
                handle = await task.enqueue()
                assert await handle.result(timeout=5) == task.name.rsplit(".", 1)[-1]
                assert time.monotonic() - started < 0.5
