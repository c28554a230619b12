"""The worker's cron loop: fire every tick of every schedule of the queues it serves."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from queue_async.broker.reconnect import Backoff
from queue_async.exceptions import BrokerError
from queue_async.producer.cron import CronSchedule, tick_ms
from queue_async.producer.encode import encode_job

if TYPE_CHECKING:
    from queue_async.broker.scripts import Arg, Scripts
    from queue_async.producer.queue import Queue

logger = logging.getLogger("queue_async.worker")


CRON_FORGET_MS = 7 * 86_400_000
"""A schedule no worker recorded for this long, and that no live worker fires, is dropped
from the queue's ``crons`` hash by the next worker start (see record_crons.lua)."""


async def record_crons(queue: Queue, scripts: Scripts) -> None:
    """Record on the server the schedules of ``queue`` this worker fires (for
    ``Admin.crons``): name, spec, task and timezone."""
    fields: list[Arg] = []
    for schedule in queue.crons.values():
        entry = {
            "spec": schedule.spec,
            "task": schedule.task.name,
            "timezone": schedule.timezone.key,
        }
        fields += [schedule.name, json.dumps(entry)]
    if fields:
        await scripts.record_crons(CRON_FORGET_MS, fields)


async def run_crons(
    queues: Sequence[Queue], scripts: Sequence[Scripts], reconnect_max: float
) -> None:
    """Fire ticks forever (cron.lua lets the first worker's call through, once per tick).

    ``scripts``: each queue's transitions on the worker's connections. Ticks follow the
    clock of the first queue's server, like every other due time, so a worker on a host
    whose clock is off fires them on time all the same.
    """
    schedules = [
        (queue, calls, s)
        for queue, calls in zip(queues, scripts, strict=True)
        for s in queue.crons.values()
    ]
    clock = scripts[0]
    now = await server_now(clock)
    for queue, calls, schedule in schedules:
        if schedule.run_missed:
            await fire(queue, calls, schedule, schedule.last_tick(now), reconnect_max)
    due = [schedule.next_tick(now) for _, _, schedule in schedules]
    while True:
        index = min(range(len(due)), key=due.__getitem__)
        tick = due[index]
        # Sleep by the local clock, then look at the server's: again if it is not there yet.
        while (left := (tick - await server_now(clock)).total_seconds()) > 0:  # noqa: ASYNC110
            await anyio.sleep(left)
        queue, calls, schedule = schedules[index]
        due[index] = schedule.next_tick(tick)
        await fire(queue, calls, schedule, tick, reconnect_max, give_up_at=due[index])


async def server_now(scripts: Scripts) -> datetime:
    """The server's time; the local clock while the server cannot be asked."""
    try:
        seconds, micros = await scripts.client.time()
    except Exception:  # noqa: BLE001 - a tick late by the skew beats a tick lost
        return datetime.now(UTC)
    return datetime.fromtimestamp(seconds + micros / 1_000_000, UTC)


async def fire(
    queue: Queue,
    scripts: Scripts,
    schedule: CronSchedule,
    tick: datetime,
    reconnect_max: float,
    give_up_at: datetime | None = None,
) -> None:
    """Enqueue one tick's job; while Redis is away, retry until the next tick is due."""
    tick_id = schedule.job_id(tick)
    if queue.sharded_as.shard_for(tick_id) is not queue:
        return  # another shard of the queue takes this tick: the one its job id falls in
    spec = schedule.task.options(job_id=tick_id).call(*schedule.args, **schedule.kwargs)
    job_id, job = encode_job(queue.codec, queue.max_payload_bytes, spec)
    backoff = Backoff(reconnect_max)
    while True:
        try:
            added = await scripts.cron_tick(schedule.name, tick_ms(tick), job)
        except BrokerError as exc:
            if give_up_at is not None and datetime.now(UTC) >= give_up_at:
                logger.error(  # noqa: TRY400 - a lost connection's traceback says nothing
                    "cron %s: tick %s lost: %s", schedule.name, tick, exc
                )
                return
            await backoff.wait(exc)
            continue
        if added:
            logger.info("cron %s: enqueued tick %s as job %s", schedule.name, tick, job_id)
        return
