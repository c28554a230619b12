"""Jobs from a producer that does not follow the wire format (docs/wire-format.md): enqueue
refuses them whole, with the reason; a job written around enqueue is ended by the worker
with the reason, and the worker goes on."""

from __future__ import annotations

import pytest

import queue_async as qa
from queue_async.broker.wire import Opt, pack_fields, pack_headers, pack_job
from tests.helpers import drain

pytestmark = pytest.mark.anyio

GOOD = pack_job("good", b"", "foreign.ok", b"[[], {}]")


def _options(**places: bytes) -> bytes:
    fields: list[bytes | str | int] = [""] * len(Opt)
    for name, value in places.items():
        fields[Opt[name.upper()]] = value
    return pack_fields(fields)


@pytest.mark.parametrize(
    ("places", "reason"),
    [
        ({"timeout": b"1.5"}, 'option timeout must be an integer >= 1, not "1.5"'),
        ({"retries": b"two"}, "option retries must be an integer >= 0"),
        ({"priority": b"0x10"}, "option priority must be an integer from -1048576 to 1048576"),
        ({"priority": b"2000000"}, "option priority must be an integer from"),
        ({"delay": b" 5"}, "option delay must be an integer"),
        ({"ckey": b"k"}, "option ckey needs climit"),
        ({"urunning": b"yes"}, 'option urunning must be "" or "1"'),
        ({"replace": b"yes"}, 'option replace must be "" or "1"'),
        ({"headers": b"5:abc"}, "option headers must be packed name, value pairs"),
        ({"headers": b"1:a"}, "option headers must be packed name, value pairs"),
    ],
)
async def test_enqueue_refuses_a_batch_with_malformed_options_whole(
    queue: qa.Queue, places: dict[str, bytes], reason: str
) -> None:
    broken = pack_job("broken", _options(**places), "foreign.ok", b"[[], {}]")
    # A good job first: it must not land either.
    with pytest.raises(qa.BrokerError, match=f"job 2 of the batch: {reason}") as caught:
        await queue._broker.scripts.enqueue(GOOD + broken)
    assert "nothing was enqueued" in str(caught.value)
    assert await queue.client.keys(f"{queue.key_prefix}*") == []


async def test_enqueue_refuses_an_empty_job_id(queue: qa.Queue) -> None:
    with pytest.raises(qa.BrokerError, match="job 1 of the batch: its id is empty"):
        await queue._broker.scripts.enqueue(pack_job("", b"", "foreign.ok", b"[[], {}]"))
    assert await queue.client.keys(f"{queue.key_prefix}*") == []


async def test_well_formed_foreign_options_are_taken(queue: qa.Queue) -> None:
    options = _options(priority=b"-3", retries=b"2", headers=pack_headers({"a": "b"}))
    await queue._broker.scripts.enqueue(pack_job("fine", options, "foreign.ok", b"[[], {}]"))
    info = await queue.job("fine").info()
    assert (info.priority, info.headers) == (-3, {"a": "b"})


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("timeout", "1.5", "options are malformed"),
        ("keep", "-", "options are malformed"),
        ("headers", "5:abc", "headers are malformed"),
        ("headers", "1:a", "headers are malformed"),
    ],
)
async def test_a_job_written_around_enqueue_with_bad_fields_goes_to_dead_and_the_worker_goes_on(
    queue: qa.Queue, field: str, value: str, reason: str
) -> None:
    @queue.task(name="foreign.ok")
    async def ok() -> str:
        return "ok"

    keys = queue._broker.keys
    await queue.client.hset(
        keys.job("broken"),
        mapping={
            "state": "ready",
            "task": "foreign.ok",
            "payload": "[[], {}]",
            "enqueued": "1",
            "attempts": "0",
            field: value,
        },
    )
    await queue.client.rpush(keys.fifo, "broken")
    good = await ok.enqueue()

    await drain(queue)

    info = await queue.job("broken").info()
    assert info.status is qa.JobStatus.DEAD
    assert info.error is not None and reason in info.error
    assert await good.result(timeout=1) == "ok"


async def test_a_job_whose_priority_is_not_a_number_can_still_be_read(queue: qa.Queue) -> None:
    await queue.client.hset(
        queue._broker.keys.job("odd"),
        mapping={"state": "ready", "task": "foreign.ok", "priority": "abc"},
    )
    info = await queue.job("odd").info()
    assert info.priority == 0
