"""The live workers of a queue, from their heartbeats.

A worker publishes one heartbeat per interval per queue it serves (``WorkerHeartbeat``, in
``worker:<id>`` with a TTL of three intervals, and its time in the ``workers`` sorted set;
see extend.lua). A worker whose heartbeat expired is not listed: its key is gone, and the
next heartbeat of any worker drops it from ``workers``, as the leases it held are recovered.
What a worker runs is as fresh as its last heartbeat; the check-ins of those jobs are read
from the jobs themselves, at the time of the call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pydantic

from queue_async.broker.errors import translate_errors
from queue_async.broker.wire import as_text
from queue_async.models import RunningJob, WorkerHeartbeat, WorkerInfo, ms_to_datetime
from queue_async.producer.queue import Queue

__all__ = ["heartbeats", "live_workers", "merged"]

_CHECKIN_FIELDS = "checkin progress checkin_at"


async def heartbeats(queue: Queue) -> list[tuple[WorkerHeartbeat, int]]:
    """The live heartbeats of the queue's workers, each with its time (server ms)."""
    keys = queue._broker.keys
    with translate_errors("reading the workers' heartbeats"):
        members: list[Any] = await queue.client.zrange(keys.workers, 0, -1, withscores=True)
        if not members:
            return []
        async with queue.client.pipeline(transaction=False) as pipe:
            for member, _ in members:
                pipe.get(keys.worker(as_text(member)))
            beats = await pipe.execute()
    live = []
    for (_, seen), raw in zip(members, beats, strict=True):
        if raw is None:
            continue  # expired: the worker is gone
        try:
            live.append((WorkerHeartbeat.model_validate_json(raw), int(seen)))
        except pydantic.ValidationError:
            continue  # not ours (another version's format, or written by hand)
    return live


async def live_workers(queue: Queue) -> list[WorkerInfo]:
    """The workers whose heartbeat on ``queue`` is live, by id, with the jobs they run."""
    live = sorted(await heartbeats(queue), key=lambda item: item[0].id)
    ids = [job.id for beat, _ in live for job in beat.jobs]
    checkins = dict(zip(ids, await queue._broker.scripts.read(ids, _CHECKIN_FIELDS), strict=True))
    workers = []
    for beat, seen in live:
        jobs = [_with_checkin(job, checkins.get(job.id)) for job in beat.jobs]
        workers.append(
            WorkerInfo(
                id=beat.id,
                queue=beat.queue,
                host=beat.host,
                pid=beat.pid,
                started_at=beat.started_at,
                concurrency=beat.concurrency,
                jobs=jobs,
                prefetched=beat.prefetched,
                processed=beat.processed,
                failed=beat.failed,
                crons=beat.crons,
                last_seen=ms_to_datetime(seen),
            )
        )
    return workers


def _with_checkin(job: RunningJob, fields: bytes | list[bytes] | None) -> RunningJob:
    """The job with its last check-in, from read.lua's HMGET values."""
    if not isinstance(fields, list):
        return job  # gone, or not started (a fresh record): no check-in
    message, progress, at = fields
    try:
        return job.model_copy(
            update={
                "checkin": None if message is None else as_text(message),
                "progress": None if progress is None else float(progress),
                "checkin_at": None if at is None else ms_to_datetime(int(at)),
            }
        )
    except ValueError:
        return job


def merged(queue: str, found: list[WorkerInfo]) -> list[WorkerInfo]:
    """The workers of a sharded queue from those of its shards: one entry per worker (it
    heartbeats on each shard it serves), with the jobs and prefetches of every shard."""
    by_id: dict[str, WorkerInfo] = {}
    for worker in found:
        seen = by_id.get(worker.id)
        if seen is None:
            by_id[worker.id] = worker.model_copy(update={"queue": queue})
            continue
        by_id[worker.id] = seen.model_copy(
            update={
                "jobs": [*seen.jobs, *worker.jobs],
                "prefetched": seen.prefetched + worker.prefetched,
                "crons": sorted({*seen.crons, *worker.crons}),
                "last_seen": latest(seen.last_seen, worker.last_seen),
            }
        )
    return [by_id[worker_id] for worker_id in sorted(by_id)]


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max((t for t in (a, b) if t is not None), default=None)
