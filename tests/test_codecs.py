"""Any codec that round-trips its own values works end to end: pickle keeps tuples and sets,
msgpack gives tuples back as tuples (use_list=False) and bytes as bytes."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import queue_async as qa
from tests.conftest import unique_name
from tests.helpers import MsgpackCodec, PickleCodec, drain

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("codec", "value"),
    [
        pytest.param(PickleCodec(), ((1, 2), {3, 4}, b"raw"), id="pickle"),
        pytest.param(MsgpackCodec(), ((1, 2), b"raw", {"k": (5,)}), id="msgpack"),
    ],
)
async def test_a_codec_that_keeps_its_own_types_runs_jobs_and_returns_results(
    redis_url: str, codec: qa.Codec, value: tuple[Any, ...]
) -> None:
    async with qa.Queue(redis_url, name=unique_name(), codec=codec) as queue:
        seen: list[tuple[Any, ...]] = []

        @queue.task
        async def echo(*args: Any, key: Any = None) -> Any:
            seen.append(args)
            return [args, key]

        handle = await echo.enqueue(*value, key=value[0])
        await drain(queue)
        assert seen == [value]
        assert codec.decode(codec.encode([value, value[0]])) == await handle.result(timeout=5)


async def test_a_codec_error_of_any_type_at_enqueue_is_an_encode_error(redis_url: str) -> None:
    class Refusing(PickleCodec):
        def encode(self, value: Any) -> bytes:
            raise pickle.PicklingError("cannot pickle this")

    async with qa.Queue(redis_url, name=unique_name(), codec=Refusing()) as queue:
        with pytest.raises(qa.EncodeError, match="cannot pickle this"):
            await queue.enqueue("some.task", 1)
        assert (await queue.stats()).ready == 0


async def test_a_result_the_codec_cannot_encode_fails_the_try_whatever_it_raises(
    redis_url: str,
) -> None:
    class ResultRefusing(PickleCodec):
        def encode(self, value: Any) -> bytes:
            if value == "bad":
                raise pickle.PicklingError("no results like this")
            return super().encode(value)

    async with qa.Queue(redis_url, name=unique_name(), codec=ResultRefusing()) as queue:

        @queue.task(retries=0)
        async def bad() -> str:
            return "bad"

        handle = await bad.enqueue()
        await drain(queue)
        with pytest.raises(qa.JobFailed, match="no results like this"):
            await handle.result(timeout=5)
