"""A queue's stats, read by one script (stats.lua), for any queue of a server: ``read_stats``
takes the ``Scripts`` of the queue, so that one pool serves every queue it is asked about."""

from __future__ import annotations

from typing import Any

from queue_async.broker.scripts import Scripts
from queue_async.broker.wire import as_text
from queue_async.models import QueueStats

__all__ = ["combined_stats", "read_stats"]


async def read_stats(scripts: Scripts, name: str) -> QueueStats:
    """The stats of the queue ``scripts`` speaks to, named ``name``, as of one moment."""
    return stats_of(name, await scripts.stats())


def stats_of(name: str, reply: list[Any]) -> QueueStats:
    """``QueueStats`` from stats.lua's reply (its header says the order)."""
    (
        ready,
        scheduled,
        retrying,
        leased,
        dead,
        processed,
        failed,
        retried,
        died,
        paused,
        ready_since,
        now,
        workers,
        _running,
        prefetched,
        gates,
        paused_tasks,
    ) = reply
    held_by_task: dict[str, int] = {}
    held_by_key: dict[str, int] = {}
    for i in range(0, len(gates), 2):
        gate, count = as_text(gates[i]), int(gates[i + 1])
        kind, _, subject = gate.partition(":")
        into = held_by_key if kind == "k" else held_by_task
        into[subject] = into.get(subject, 0) + count
    leased = int(leased)
    # The heartbeats are a little behind the active set: the split never exceeds it.
    prefetched = min(int(prefetched), leased)
    since = int(ready_since)
    return QueueStats(
        queue=name,
        ready=int(ready),
        scheduled=int(scheduled),
        delayed=max(0, int(scheduled) - int(retrying)),
        retrying=int(retrying),
        leased=leased,
        active=leased - prefetched,
        prefetched=prefetched,
        dead=int(dead),
        held=sum(held_by_task.values()) + sum(held_by_key.values()),
        held_by_task=held_by_task,
        held_by_key=held_by_key,
        latency=max(0, int(now) - since) / 1000 if since >= 0 else 0.0,
        processed=int(processed),
        failed=int(failed),
        retried=int(retried),
        died=int(died),
        workers=int(workers),
        paused=bool(paused),
        paused_tasks=sorted(as_text(task) for task in paused_tasks),
    )


_SUMMED = [
    "ready",
    "scheduled",
    "delayed",
    "retrying",
    "leased",
    "active",
    "prefetched",
    "dead",
    "held",
    "processed",
    "failed",
    "retried",
    "died",
]


def combined_stats(name: str, shards: list[QueueStats]) -> QueueStats:
    """The stats of a sharded queue from its shards': counts summed; latency the longest;
    paused if every shard is; ``workers`` the most on one shard (a worker of the queue
    serves every shard, and would be counted once per shard)."""
    held_by_task: dict[str, int] = {}
    held_by_key: dict[str, int] = {}
    for part in shards:
        for task, count in part.held_by_task.items():
            held_by_task[task] = held_by_task.get(task, 0) + count
        for key, count in part.held_by_key.items():
            held_by_key[key] = held_by_key.get(key, 0) + count
    return QueueStats(
        queue=name,
        **{field: sum(getattr(part, field) for part in shards) for field in _SUMMED},
        latency=max(part.latency for part in shards),
        workers=max(part.workers for part in shards),
        paused=all(part.paused for part in shards),
        paused_tasks=sorted(set.intersection(*(set(part.paused_tasks) for part in shards))),
        held_by_task=held_by_task,
        held_by_key=held_by_key,
    )
