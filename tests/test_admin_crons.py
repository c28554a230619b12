"""Admin.crons(): the schedules workers recorded, with last and next ticks, live or not."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import anyio
import pytest

import queue_async as qa
from queue_async.worker.crons import CRON_FORGET_MS
from tests.helpers import FAST
from tests.lua._support import server_ms

pytestmark = pytest.mark.anyio


async def test_a_worker_s_schedules_are_listed_live_with_their_ticks(queue: qa.Queue) -> None:
    @queue.task(name="tick")
    async def tick() -> None:
        return None

    queue.cron("* * * * * *", tick)
    queue.cron("0 9 * * 1", tick, name="weekly", timezone="Europe/Paris")
    admin = qa.Admin(queue)
    async with qa.Worker(queue, **FAST):
        with anyio.fail_after(10):
            while (
                not (crons := await admin.crons())
                or not all(c.live for c in crons)
                or (crons[0].last_tick is None)
            ):
                await anyio.sleep(0.05)
    every, weekly = crons
    assert (every.name, every.spec, every.task, every.timezone) == (
        "tick",
        "* * * * * *",
        "tick",
        "UTC",
    )
    assert every.last_tick is not None and every.next_tick is not None
    assert every.next_tick > every.last_tick
    assert (weekly.name, weekly.timezone, weekly.last_tick) == ("weekly", "Europe/Paris", None)
    assert weekly.next_tick is not None
    local = weekly.next_tick.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)
    assert weekly.recorded_at is not None

    # Its worker stopped: still listed, no longer live.
    after = await admin.crons()
    assert [c.name for c in after] == ["tick", "weekly"]
    assert not any(c.live for c in after)


async def test_a_burst_worker_records_no_schedules(queue: qa.Queue) -> None:
    @queue.task(name="tick")
    async def tick() -> None:
        return None

    queue.cron("* * * * *", tick)
    await qa.Worker(queue, **FAST).run(burst=True, handle_signals=False)

    assert await qa.Admin(queue).crons() == []


async def test_a_worker_start_drops_schedules_long_unrecorded_and_not_fired(
    queue: qa.Queue,
) -> None:
    @queue.task(name="tick")
    async def tick() -> None:
        return None

    queue.cron("* * * * *", tick)
    keys = queue._broker.keys
    now = await server_ms(queue)
    old = now - CRON_FORGET_MS - 60_000
    entry = {"spec": "* * * * *", "task": "x", "timezone": "UTC"}
    await queue.client.hset(
        keys.crons,
        mapping={
            "forgotten": json.dumps({**entry, "recorded": old}),
            "elsewhere": json.dumps({**entry, "recorded": old}),
            "recent": json.dumps({**entry, "recorded": now - 60_000}),
            "garbage": "{not json",
        },
    )
    # Another worker, alive, still fires "elsewhere".
    beat = json.dumps({"id": "other", "crons": ["elsewhere"]}).encode()
    await queue._broker.scripts.extend(60_000, "other", beat, 60_000, [])

    async with qa.Worker(queue, **FAST):
        with anyio.fail_after(10):
            while "forgotten" in {c.name for c in await qa.Admin(queue).crons()}:
                await anyio.sleep(0.05)
        names = {c.name for c in await qa.Admin(queue).crons()}

    assert names == {"tick", "elsewhere", "recent"}
    assert await queue.client.hexists(keys.crons, "garbage") == 0


async def test_records_that_are_not_a_worker_s_are_skipped(queue: qa.Queue) -> None:
    keys = queue._broker.keys
    await queue.client.hset(
        keys.crons,
        mapping={
            "broken": "[1, 2]",
            "unknown-zone": json.dumps({"spec": "* * * * *", "task": "t", "timezone": "Mars/Base"}),
        },
    )

    (listed,) = await qa.Admin(queue).crons()

    assert (listed.name, listed.next_tick, listed.live) == ("unknown-zone", None, False)
