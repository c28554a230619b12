"""complete.lua: record jobs done, each only while its lease token is current."""

from __future__ import annotations

import pytest

import queue_async as qa
from queue_async.broker.scripts import SCRIPTS
from queue_async.broker.wire import pack_fields
from tests.lua._support import (
    enqueue,
    expire_leases,
    fields,
    lease,
    lease_one,
    members,
    meta,
    server_ms,
)

pytestmark = pytest.mark.anyio


async def test_complete_records_result_and_expires_the_record(queue: qa.Queue) -> None:
    token = await lease_one(queue, "a")
    started = int((await fields(queue, "a"))["started"])

    assert await queue._broker.scripts.complete(["a", token, b'{"ok": 1}', 60_000]) == [1]
    after = await server_ms(queue)

    job_hash = await fields(queue, "a")
    assert job_hash["state"] == "done"
    assert job_hash["result"] == '{"ok": 1}'
    assert started <= int(job_hash["finished"]) <= after
    assert job_hash["token"] == ""  # blanked: no lease token can complete it again
    assert job_hash["spent"] == token
    # The same call again (its reply lost, sent again) answers as the first did, changing
    # nothing.
    assert await queue._broker.scripts.complete(["a", token, b"{}", 60_000]) == [1]
    assert (await fields(queue, "a"))["result"] == '{"ok": 1}'
    assert 55_000 < await queue.client.pttl(queue._broker.keys.job("a")) <= 60_000
    assert await members(queue, queue._broker.keys.active) == {}
    assert await meta(queue) == {"processed": 1}


async def test_complete_with_zero_keep_deletes_the_job_hash(queue: qa.Queue) -> None:
    token = await lease_one(queue, "a")
    assert await queue._broker.scripts.complete(["a", token, b"", 0]) == [1]
    assert await queue.client.exists(queue._broker.keys.job("a")) == 0
    assert await members(queue, queue._broker.keys.active) == {}
    assert await meta(queue) == {"processed": 1}


async def test_complete_with_stale_token_changes_nothing(queue: qa.Queue) -> None:
    old_token = await lease_one(queue, "a", lease_id="first")
    await expire_leases(queue, "a")
    reply = await lease(queue, 1, lease_id="second")  # recovered and leased again
    assert reply.token("a") == "second:1"
    before = await fields(queue, "a")
    active = await members(queue, queue._broker.keys.active)

    replies = await queue._broker.scripts.complete(
        ["a", old_token, b"late", 60_000, "a", "made-up", b"x", 60_000]
    )

    assert replies == [0, 0]
    assert await fields(queue, "a") == before
    assert await members(queue, queue._broker.keys.active) == active
    assert await queue.client.pttl(queue._broker.keys.job("a")) == -1
    assert await meta(queue) == {}


async def test_complete_of_missing_job_creates_nothing(queue: qa.Queue) -> None:
    assert await queue._broker.scripts.complete(["ghost", "t:1", b"r", 60_000]) == [2]  # gone
    assert await queue.client.keys(f"{queue._broker.keys.prefix}*") == []


async def test_complete_batch_reports_each_job_and_counts_processed(queue: qa.Queue) -> None:
    await enqueue(queue, "a", "b", "c")
    reply = await lease(queue, 3)

    replies = await queue._broker.scripts.complete(
        [
            *("a", reply.token("a"), b"ra", 60_000),
            *("b", "wrong", b"rb", 60_000),
            *("c", reply.token("c"), b"rc", 0),
        ]
    )

    assert replies == [1, 0, 1]
    assert (await fields(queue, "a"))["state"] == "done"
    assert (await fields(queue, "b"))["state"] == "active"
    assert await queue.client.exists(queue._broker.keys.job("c")) == 0
    assert set(await members(queue, queue._broker.keys.active)) == {"b"}
    assert await meta(queue) == {"processed": 2}

    await queue._broker.scripts.complete(["b", reply.token("b"), b"rb", 60_000])
    assert await meta(queue) == {"processed": 3}


async def test_complete_twice_counts_once(queue: qa.Queue) -> None:
    token = await lease_one(queue, "a")
    assert await queue._broker.scripts.complete(["a", token, b"1", 60_000]) == [1]
    # Recognised as a repeat of the call that recorded it (its reply lost): nothing changes.
    assert await queue._broker.scripts.complete(["a", token, b"2", 60_000]) == [1]
    assert (await fields(queue, "a"))["result"] == "1"
    assert await meta(queue) == {"processed": 1}


async def test_malformed_completions_are_refused_and_change_nothing(queue: qa.Queue) -> None:
    token = await lease_one(queue, "a")
    good = pack_fields(["a", token, b"{}", 60_000])
    keys = [
        queue._broker.keys.active,
        queue._broker.keys.meta,
        queue._broker.keys.ready,
        queue._broker.keys.wake,
    ]
    for bad in (good + b"1:x", good[:-1], b"x:" + good):
        with pytest.raises(qa.BrokerError, match="malformed completions"):
            await queue._broker.scripts._call(
                SCRIPTS["complete"], keys, [queue._broker.keys.prefix, bad]
            )
    assert (await fields(queue, "a"))["state"] == "active"
    assert await meta(queue) == {}


async def test_a_repeated_complete_of_a_job_recorded_with_keep_zero_answers_gone(
    queue: qa.Queue,
) -> None:
    token = await lease_one(queue, "a")
    assert await queue._broker.scripts.complete(["a", token, b"1", 0]) == [1]
    assert await queue._broker.scripts.complete(["a", token, b"1", 0]) == [2]
    assert await meta(queue) == {"processed": 1}


async def test_a_late_complete_after_recovery_and_a_second_finish_is_refused(
    queue: qa.Queue,
) -> None:
    first = await lease_one(queue, "a")
    await expire_leases(queue, "a")
    second = (await lease(queue, 1, lease_id="second")).token("a")
    assert await queue._broker.scripts.complete(["a", second, b"2", 60_000]) == [1]
    # The first holder's token was never spent on this job: refused, the result stays.
    assert await queue._broker.scripts.complete(["a", first, b"1", 60_000]) == [0]
    assert (await fields(queue, "a"))["result"] == "2"
    assert await meta(queue) == {"processed": 1}
