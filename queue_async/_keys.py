"""The only place Redis key names are built.

Every key of one queue starts with ``<prefix>:{<queue>}:`` so that the whole queue lives in one
hash slot: each Lua script touches a single slot and the library runs unchanged on Redis
Cluster. Per-job keys are built inside the scripts from the same tagged prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from queue_async.exceptions import ConfigurationError

# Braces would move the hash tag; whitespace and control characters make keys unreadable in
# redis-cli. Everything else that people name queues with is allowed.
_NAME = re.compile(r"[A-Za-z0-9_.\-:]{1,100}")
_JOB_ID_MAX = 200
_TASK_NAME_MAX = 200


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid queue name or key prefix, else raise."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigurationError(
            f"{kind} {value!r} is not valid: use 1 to 100 characters from letters, digits "
            "and '_.-:' (no braces, spaces or control characters)"
        )
    return value


def check_task_name(name: str) -> str:
    """Return ``name`` if it can name a task, else raise."""
    if not isinstance(name, str) or not 0 < len(name) <= _TASK_NAME_MAX or not name.isprintable():
        raise ConfigurationError(
            f"task name {name!r} is not valid: use 1 to {_TASK_NAME_MAX} printable characters"
        )
    return name


def check_job_id(job_id: str) -> str:
    """Return ``job_id`` if it can be a job id, else raise."""
    if (
        not isinstance(job_id, str)
        or not 0 < len(job_id) <= _JOB_ID_MAX
        or not job_id.isprintable()
        or any(c.isspace() for c in job_id)
    ):
        raise ConfigurationError(
            f"job id {job_id!r} is not valid: use 1 to {_JOB_ID_MAX} printable characters "
            "without spaces"
        )
    return job_id


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The key names of one queue."""

    prefix: str
    """``<prefix>:{<queue>}:``, the start of every key of this queue."""
    ready: str
    """Ready jobs of a priority other than 0 (sorted set; see lua/_lib.lua)."""
    fifo: str
    """Ready jobs of priority 0, oldest first (list)."""
    fresh: str
    """Jobs queued and not started yet, as compact records (hash: id -> record)."""
    scheduled: str
    active: str
    dead: str
    wake: str
    seq: str
    meta: str
    workers: str
    idle: str
    gates: str
    """Flow control settings: pause flags, task limits (see lua/_gates.lua)."""
    gated: str
    """The gates holding jobs back now."""
    cron: str
    """Cron schedules: name -> the last tick enqueued (epoch ms)."""

    @classmethod
    def for_queue(cls, prefix: str, queue: str) -> QueueKeys:
        base = f"{check_name('key prefix', prefix)}:{{{check_name('queue name', queue)}}}:"
        return cls(
            prefix=base,
            ready=base + "ready",
            fifo=base + "fifo",
            fresh=base + "fresh",
            scheduled=base + "scheduled",
            active=base + "active",
            dead=base + "dead",
            wake=base + "wake",
            seq=base + "seq",
            meta=base + "meta",
            workers=base + "workers",
            idle=base + "idle",
            gates=base + "gates",
            gated=base + "gated",
            cron=base + "cron",
        )

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def done_channel(self) -> str:
        """Pub/sub channel on which a finishing script announces the id of an awaited job."""
        return f"{self.prefix}done"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def held(self, gate: str) -> str:
        """Jobs a gate holds back, e.g. ``t:<task>`` (see lua/_gates.lua)."""
        return f"{self.prefix}held:{gate}"

    def alarm(self, worker_id: str) -> str:
        """A worker rings this list to end its own blocking wait at a job's due time."""
        return f"{self.prefix}alarm:{worker_id}"

    def inbox(self, worker_id: str) -> str:
        """Jobs handed straight to an idle worker by enqueue.lua (see lease.lua)."""
        return f"{self.prefix}inbox:{worker_id}"
