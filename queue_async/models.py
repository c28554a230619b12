"""Pydantic models the public API returns: jobs, heartbeats, statistics. No I/O here."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CronInfo",
    "Job",
    "JobPage",
    "JobStatus",
    "QueueStats",
    "RunningJob",
    "WorkerHeartbeat",
    "WorkerInfo",
]


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


FINAL_STATES = frozenset(status.value for status in JobStatus if status.finished)
"""The final states as text, as the scripts store them."""


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


class JobPage(BaseModel):
    """One page of a listing (``Admin.jobs``): the jobs, and where the next page starts."""

    model_config = ConfigDict(frozen=True)

    jobs: list[Job]
    cursor: str | None
    """Pass to the next call for the next page; None once the listing is at its end."""
    scanned: int = 0
    """Jobs this call looked at. With a filter, a page may hold fewer than ``limit`` jobs
    (even none) while ``cursor`` is not None: the walk goes on in the next call."""


class RunningJob(BaseModel):
    """A job a worker runs now (``WorkerHeartbeat.jobs``, ``WorkerInfo.jobs``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    task: str
    started_at: datetime | None = None
    """When its handler started (the worker's clock)."""
    checkin: str | None = None
    """Its last check-in message (``ctx.checkin``), as the admin read it."""
    progress: float | None = None
    checkin_at: datetime | None = None
    """When it last checked in (server clock); None if it has not."""


class WorkerHeartbeat(BaseModel):
    """What a worker publishes every heartbeat, per queue it serves: who it is and what it
    runs. One write per heartbeat interval, whatever the number of jobs (see extend.lua)."""

    model_config = ConfigDict(frozen=True)

    id: str
    queue: str
    host: str
    pid: int
    started_at: datetime
    concurrency: int
    # active, prefetched and crons come before jobs: stats.lua and record_crons.lua find
    # them in the JSON without decoding the list of jobs.
    active: int = 0
    """Jobs of this queue whose handler runs now."""
    prefetched: int = 0
    """Jobs of this queue leased ahead, waiting for a free slot (not started)."""
    processed: int = 0
    """Jobs this worker finished (done, retried or dead) since it started, all queues."""
    failed: int = 0
    """Tries that failed in this worker since it started (retried or gone to dead), all
    queues."""
    crons: list[str] = []
    """The cron schedules of this queue the worker fires."""
    jobs: list[RunningJob] = []
    """The jobs of this queue whose handler runs now."""

    @property
    def running(self) -> list[str]:
        """Ids of the jobs running right now."""
        return [job.id for job in self.jobs]


class QueueStats(BaseModel):
    """One queue as of one moment (read by one script): counts per state, latency, and the
    counters kept since the queue was created.

    ``active`` and ``prefetched`` split the leased jobs by the live workers' heartbeats, so
    that split is as fresh as each worker's last heartbeat; every other figure is exact.
    """

    model_config = ConfigDict(frozen=True)

    queue: str
    ready: int
    """Jobs waiting for a worker (not those a gate holds back: see ``held``)."""
    scheduled: int
    """Jobs waiting for their time: ``delayed`` plus ``retrying``."""
    active: int
    """Leased jobs whose handler has started (``leased`` less ``prefetched``)."""
    dead: int
    """Jobs in the dead set now (trimmed by age and length)."""
    processed: int
    """Jobs completed since the queue was created."""
    failed: int
    """Jobs that went to dead after running (out of tries, fatal, stalled too often)."""
    retried: int
    """Tries that failed and were scheduled again."""
    workers: int
    """Workers whose heartbeat is live."""
    held: int = 0
    """Ready jobs held back by a paused task or a concurrency or rate limit (not in ``ready``)."""
    paused: bool = False
    """The whole queue is paused: no worker takes its jobs."""
    delayed: int = 0
    """Scheduled jobs a producer enqueued for later (``enqueue_in``/``enqueue_at``)."""
    retrying: int = 0
    """Scheduled jobs waiting out a retry's backoff."""
    prefetched: int = 0
    """Leased jobs a worker holds ahead, not started yet (from heartbeats)."""
    leased: int = 0
    """Jobs leased to workers: ``active`` plus ``prefetched``."""
    latency: float = 0.0
    """Seconds the next job to be leased has waited since it became ready (since it was
    enqueued, since it was due if it was scheduled, since it went back to ready if it was
    retried at once, recovered or handed back); 0 when nothing is ready."""
    died: int = 0
    """Jobs that went to dead since the queue was created, for any reason (the dead set
    itself is trimmed; this count is not)."""
    paused_tasks: list[str] = []
    """Tasks paused on their own (``queue.pause(task)``)."""
    held_by_task: dict[str, int] = {}
    """``held`` per task, for the gates of a task: paused, ``max_concurrency``, rate limit."""
    held_by_key: dict[str, int] = {}
    """``held`` per concurrency key (``concurrency_key``)."""


class WorkerInfo(BaseModel):
    """A live worker on one queue, from its last heartbeat (``Admin.workers``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    queue: str
    host: str
    pid: int
    started_at: datetime
    concurrency: int
    jobs: list[RunningJob] = []
    """The jobs of this queue whose handler runs now."""
    prefetched: int = 0
    """Jobs of this queue it holds leased ahead, not started."""
    processed: int = 0
    """Jobs it finished since it started (every queue it serves)."""
    failed: int = 0
    """Tries that failed in it since it started (every queue it serves)."""
    crons: list[str] = []
    """The cron schedules of this queue it fires."""
    last_seen: datetime | None = None
    """Its last heartbeat (server clock)."""


class CronInfo(BaseModel):
    """A cron schedule a worker of the queue recorded at its start (``Admin.crons``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    spec: str
    task: str
    timezone: str = "UTC"
    last_tick: datetime | None = None
    """The last tick enqueued (None if none was yet)."""
    next_tick: datetime | None = None
    """The next tick after now, from the spec in its timezone."""
    recorded_at: datetime | None = None
    """When a worker last recorded it (at that worker's start)."""
    live: bool = False
    """Some live worker fires it now. A schedule no live worker fires is still listed (its
    ticks are not enqueued meanwhile), and dropped by the next worker start once it has
    not been recorded for 7 days."""
