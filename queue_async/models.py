"""Pydantic models the public API returns: jobs, heartbeats, statistics. No I/O here."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Job", "JobStatus", "QueueStats", "WorkerHeartbeat"]


class JobStatus(StrEnum):
    """Where a job is in its life cycle."""

    SCHEDULED = "scheduled"
    """Waiting for its run-at time: delayed, or a retry waiting out its backoff."""
    READY = "ready"
    """Waiting for a worker."""
    ACTIVE = "active"
    """Leased by a worker and running."""
    DONE = "done"
    """Finished; the result is kept for the task's ``keep_result``."""
    DEAD = "dead"
    """Failed for good: out of tries, fatal error, or undecodable. Kept in the dead set."""
    ABORTED = "aborted"
    """Stopped while running, by ``handle.abort()``; not retried."""
    CANCELLED = "cancelled"
    """Cancelled before it started."""

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.ABORTED)


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


class Job(BaseModel):
    """A snapshot of one job, as ``handle.info()`` returns it."""

    model_config = ConfigDict(frozen=True)

    id: str
    queue: str
    task: str
    status: JobStatus
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    attempts: int = 0
    """Tries started so far (a try interrupted by a worker shutdown is not counted)."""
    priority: int = 0
    enqueued_at: datetime | None = None
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    """The last try's error, with its traceback."""
    result: Any = None
    worker: str | None = None
    """The worker that holds (or last held) the job."""
    checkin: str | None = None
    """The last message the running job reported with ``ctx.checkin()``."""
    progress: float | None = None
    """The last fraction done the running job reported, from 0 to 1."""
    checkin_at: datetime | None = None
    """When the job last checked in."""
    headers: dict[str, str] = {}
    """The job's headers, as given at enqueue (``task.options(headers=...)``)."""


class WorkerHeartbeat(BaseModel):
    """What a worker publishes every heartbeat: who it is and what it runs."""

    model_config = ConfigDict(frozen=True)

    id: str
    queue: str
    host: str
    pid: int
    started_at: datetime
    concurrency: int
    running: list[str]
    """Ids of the jobs running right now."""
    processed: int
    """Jobs this worker finished (done, retried or dead) since it started."""


class QueueStats(BaseModel):
    """Counts of one queue's jobs per state, and its lifetime counters."""

    model_config = ConfigDict(frozen=True)

    queue: str
    scheduled: int
    ready: int
    active: int
    dead: int
    processed: int
    """Jobs completed since the queue was created."""
    failed: int
    """Jobs that went to dead after running."""
    retried: int
    """Tries that failed and were scheduled again."""
    workers: int
    held: int = 0
    """Ready jobs held back by a paused task or a concurrency or rate limit (not in ``ready``)."""
    paused: bool = False
    """The whole queue is paused: no worker takes its jobs."""
    """Workers that sent a heartbeat recently."""
