"""Job headers: text metadata set at enqueue, carried to the handler and to ``Job``."""

from __future__ import annotations

import functools

import anyio
import pydantic
import pytest

import queue_async as qa
from tests.helpers import FAST, drain

pytestmark = pytest.mark.anyio

HEADERS = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "t": "é:7"}


async def test_headers_reach_the_handler_and_the_job_on_every_enqueue_path(
    queue: qa.Queue,
) -> None:
    seen: dict[str, dict[str, str]] = {}

    @queue.task
    async def record(ctx: qa.JobContext, tag: str) -> str:
        seen[tag] = ctx.headers
        return tag

    plain = await record.options(headers=HEADERS).enqueue("plain")  # a fresh record
    delayed = await record.options(headers=HEADERS, delay=0.05).enqueue("delayed")  # a hash
    unique = await record.options(headers=HEADERS, unique=True).enqueue("unique")
    batch = await queue.enqueue_many([record.options(headers={"n": "1"}).call("batch")])
    bare = await record.enqueue("bare")
    assert (await plain.info()).headers == HEADERS  # readable before the job runs
    assert (await delayed.info()).headers == HEADERS

    await drain(queue)

    assert seen == {
        "plain": HEADERS,
        "delayed": HEADERS,
        "unique": HEADERS,
        "batch": {"n": "1"},
        "bare": {},
    }
    for handle in (plain, delayed, unique):
        assert (await handle.info()).headers == HEADERS
    assert (await batch[0].info()).headers == {"n": "1"}
    assert (await bare.info()).headers == {}


async def test_headers_reach_a_job_handed_straight_to_an_idle_worker(queue: qa.Queue) -> None:
    got = anyio.Event()
    seen: list[dict[str, str]] = []

    @queue.task
    async def record(ctx: qa.JobContext) -> None:
        seen.append(ctx.headers)
        got.set()

    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            # Once the worker idles, a new job is leased to it by enqueue itself.
            while not await queue.client.llen(queue._broker.keys.idle):
                await anyio.sleep(0.01)
            handle = await record.options(headers=HEADERS).enqueue()
            await got.wait()
            worker.stop()
    assert seen == [HEADERS]
    assert (await handle.info()).worker == worker.id


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"": "x"}, "header name cannot be empty"),
        ({"big": "x" * 20_000}, "at most 16384"),
        ({"n": 1}, "string"),
    ],
)
async def test_bad_headers_are_refused_at_enqueue_and_nothing_is_written(
    queue: qa.Queue, headers: dict[str, object], message: str
) -> None:
    @queue.task
    async def job() -> None: ...

    with pytest.raises(pydantic.ValidationError, match=message):
        job.options(headers=headers)  # type: ignore[arg-type]
    assert await queue.client.keys(f"{queue.key_prefix}*") == []
