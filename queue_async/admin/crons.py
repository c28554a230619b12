"""The cron schedules of a queue: what its workers recorded, with last and next ticks.

A worker that fires crons records each schedule of the queue at its start (name, spec,
task, timezone; see record_crons.lua), and lists the names in its heartbeat. A schedule is
``live`` while some live worker's heartbeat lists it. One that no live worker fires stays
listed with ``live`` False (its ticks are not enqueued meanwhile), until a worker starts
when it has not been recorded for 7 days and no live worker fires it: then it is dropped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from queue_async.admin.workers import heartbeats, latest
from queue_async.broker.errors import translate_errors
from queue_async.broker.wire import as_text
from queue_async.models import CronInfo, ms_to_datetime
from queue_async.producer.queue import Queue

__all__ = ["merged", "schedules"]


async def schedules(queue: Queue) -> list[CronInfo]:
    """The schedules recorded on ``queue``, by name; ``next_tick`` is the first tick after
    the server's time now."""
    keys = queue._broker.keys
    with translate_errors("reading the cron schedules"):
        async with queue.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.crons)
            pipe.hgetall(keys.cron)
            pipe.time()
            recorded, ticks, (seconds, micros) = await pipe.execute()
    now = datetime.fromtimestamp(seconds + micros / 1e6, tz=UTC)
    live = {name for beat, _ in await heartbeats(queue) for name in beat.crons}
    last = {as_text(k): v for k, v in ticks.items()}
    listed = []
    for raw_name, raw in recorded.items():
        name = as_text(raw_name)
        try:
            entry = json.loads(raw)
            spec, task, zone = str(entry["spec"]), str(entry["task"]), str(entry["timezone"])
        except (ValueError, KeyError, TypeError):
            continue  # not a record a worker wrote
        tick = last.get(name)
        listed.append(
            CronInfo(
                name=name,
                spec=spec,
                task=task,
                timezone=zone,
                last_tick=ms_to_datetime(int(tick)) if tick is not None else None,
                next_tick=_next_tick(spec, zone, now),
                recorded_at=ms_to_datetime(int(entry["recorded"]))
                if isinstance(entry.get("recorded"), int | float)
                else None,
                live=name in live,
            )
        )
    return sorted(listed, key=lambda info: info.name)


def _next_tick(spec: str, zone: str, now: datetime) -> datetime | None:
    """The first tick of ``spec`` (read in ``zone``) after ``now``; None if it cannot be
    computed (a spec or zone this version does not know)."""
    try:
        local = now.astimezone(ZoneInfo(zone))
        tick: datetime = croniter(spec, local, second_at_beginning=len(spec.split()) == 6).get_next(
            datetime
        )
    except (ZoneInfoNotFoundError, ValueError, KeyError, TypeError):
        return None
    return tick.astimezone(UTC)


def merged(found: list[CronInfo]) -> list[CronInfo]:
    """The schedules of a sharded queue from those of its shards: each tick goes to one
    shard (the one its job id falls in), so the last tick is the latest of any shard."""
    by_name: dict[str, CronInfo] = {}
    for info in found:
        seen = by_name.get(info.name)
        if seen is None:
            by_name[info.name] = info
            continue
        by_name[info.name] = seen.model_copy(
            update={
                "last_tick": latest(seen.last_tick, info.last_tick),
                "recorded_at": latest(seen.recorded_at, info.recorded_at),
                "live": seen.live or info.live,
            }
        )
    return [by_name[name] for name in sorted(by_name)]
