"""Frozen settings: task options, per-enqueue options, worker settings.

Durations are accepted as seconds (int or float) or ``timedelta`` and kept as ``timedelta``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from queue_async.exceptions import ConfigurationError
from queue_async.identifiers import check_job_id

__all__ = ["Durability", "EnqueueOptions", "TaskOptions", "WorkerSettings"]


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError(f"must not be negative, got {value.total_seconds()} seconds")
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"must be positive, got {value.total_seconds()} seconds")
    return value


Duration = Annotated[timedelta, AfterValidator(_not_negative)]
PositiveDuration = Annotated[timedelta, AfterValidator(_positive)]
# Priorities share a sorted-set score with a 32-bit sequence number; this keeps it exact.
Priority = Annotated[int, Field(ge=-(2**20), le=2**20)]


_HEADERS_MAX_BYTES = 16_384


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    size = 0
    for name, value in headers.items():
        if not name:
            raise ValueError("a header name cannot be empty")
        size += len(name.encode()) + len(value.encode())
    if size > _HEADERS_MAX_BYTES:
        raise ValueError(f"headers take {size} bytes; at most {_HEADERS_MAX_BYTES} are allowed")
    return headers


def to_ms(value: timedelta) -> int:
    """Whole milliseconds, rounded up so a tiny positive duration never becomes zero."""
    micros = value // timedelta(microseconds=1)
    return -(-micros // 1000)


_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(ms|s|sec|m|min|h|hour|d|day)\s*")
_UNIT_MS = {"ms": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}
_UNIT_MS |= {"hour": 3_600_000, "d": 86_400_000, "day": 86_400_000}


def parse_rate(value: str) -> tuple[int, int]:
    """``"100/s"`` -> (100 jobs, 1000 ms); raises ValueError for anything else."""
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if not match or int(match[1]) < 1 or match[2] == "0":
        raise ValueError(
            f"rate limit {value!r} is not valid: use '<jobs>/<period>', e.g. '100/s', "
            "'10/min', '1000/h' or '5/10s' (units ms, s, min, h, day)"
        )
    return int(match[1]), int(match[2] or 1) * _UNIT_MS[match[3]]


def _rate(value: str) -> str:
    parse_rate(value)
    return value


RateLimit = Annotated[str, AfterValidator(_rate)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


@dataclass(frozen=True, slots=True)
class Durability:
    """How far a write must have travelled before the call that made it counts as done.

    Redis and Valkey replicate asynchronously: a master that dies a moment after it answered
    takes the writes its replicas had not received yet with it, and the replica promoted in
    its place never heard of them. With ``Queue(durability=Durability(replicas=1))`` every
    enqueue, and every completion and failure a worker records, is followed on the same
    connection, in the same round trip, by ``WAIT replicas timeout`` (and ``WAITAOF 1 0
    timeout`` with ``local_fsync``): the call returns once that many replicas hold the write.

    If fewer confirm within ``timeout``, the write is still on the master: an enqueue raises
    ``NotReplicated`` (its jobs are enqueued; repeating the call with the same job ids adds
    nothing twice), and a worker logs a warning and goes on (the outcome is recorded).

    This narrows the window, it does not close it: ``WAIT`` does not make Redis a
    consistent store (a replica that confirmed may still not be the one promoted, when
    there are several), see "Durability" in the README.

    Args:
        replicas: how many replicas must confirm each write (at least 1).
        timeout: how long a call waits for the confirmations, in seconds or a
            ``timedelta``; shorter than the queue's ``command_timeout``.
        local_fsync: also wait until the master has written the write to its append-only
            file on disk (``WAITAOF``, Redis/Valkey 7.2+, the master's ``appendonly yes``).
    """

    replicas: int = 1
    timeout: float | timedelta = 1.0
    local_fsync: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int):
            raise ConfigurationError(
                f"Durability(replicas=...) takes an int, not {self.replicas!r}"
            )
        if self.replicas < 1:
            raise ConfigurationError(
                f"Durability(replicas={self.replicas}): at least 1 (for none, pass durability=None)"
            )
        seconds = self.seconds
        if not seconds > 0:
            raise ConfigurationError(
                f"Durability(timeout=...) must be a positive number of seconds (WAIT 0 would "
                f"block for ever), not {self.timeout!r}"
            )

    @property
    def seconds(self) -> float:
        """``timeout`` in seconds."""
        timeout = self.timeout
        if isinstance(timeout, timedelta):
            return timeout.total_seconds()
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ConfigurationError(
                f"Durability(timeout=...) takes seconds or a timedelta, not {timeout!r}"
            )
        return float(timeout)

    @property
    def timeout_ms(self) -> int:
        """``timeout`` in whole milliseconds, rounded up."""
        return -(-int(self.seconds * 1_000_000) // 1000)


class TaskOptions(_Frozen):
    """How a task's jobs run, set with ``@queue.task(...)``."""

    retries: int = Field(3, ge=0)
    """Tries after the first one; ``0`` runs a job once."""
    timeout: PositiveDuration | None = timedelta(minutes=5)
    """A try running longer is cancelled and counts as failed; ``None`` for no limit."""
    backoff_base: Duration = timedelta(seconds=1)
    """The first retry waits up to this long; each further one up to twice as long..."""
    backoff_cap: Duration = timedelta(minutes=10)
    """...but never longer than this."""
    keep_result: Duration = timedelta(hours=1)
    """How long a finished job and its result stay readable; ``0`` keeps nothing."""
    priority: Priority = 0
    """Default priority of this task's jobs: lower runs first."""
    fatal: tuple[type[BaseException], ...] = ()
    """Exception types that skip remaining tries (like raising ``Fatal``)."""
    max_concurrency: int | None = Field(None, ge=1)
    """At most this many of the task's jobs run at once, across all workers."""
    rate_limit: RateLimit | None = None
    """At most this many of the task's jobs start per period, across all workers, as
    ``"100/s"``, ``"10/min"``, ``"1000/h"``, ``"5/10s"``; excess jobs wait their turn."""
    concurrency_key: Callable[..., Any] | None = None
    """Called with a job's arguments at enqueue; at most ``concurrency_limit`` running jobs
    share the key it returns (e.g. one job per customer at a time)."""
    concurrency_limit: int = Field(1, ge=1)
    """How many running jobs may share one ``concurrency_key``."""
    unique: bool = False
    """Every job of the task is unique by its arguments (see ``EnqueueOptions.unique``)."""
    unique_for: PositiveDuration | None = None
    """The longest a unique job's key holds (default: until the job finishes)."""


class EnqueueOptions(_Frozen):
    """Options for one enqueue, set with ``task.options(...)``; unset fields use the task's."""

    delay: Duration | None = None
    """Run no earlier than this long after enqueue."""
    at: datetime | None = None
    """Run no earlier than this moment (a timezone-aware datetime; naive means UTC)."""
    priority: Priority | None = None
    job_id: Annotated[str, AfterValidator(check_job_id)] | None = None
    """An explicit id: enqueueing an id that exists returns the existing job."""
    retries: int | None = Field(None, ge=0)
    timeout: PositiveDuration | None = None
    keep_result: Duration | None = None
    unique: bool | None = None
    """While a job of this task with equal arguments is queued or scheduled, enqueueing
    returns that job's handle instead of a new job."""
    unique_key: str | None = Field(None, min_length=1, max_length=200)
    """Like ``unique``, with a key of your choosing (shared by every task of the queue)."""
    unique_for: PositiveDuration | None = None
    """The longest the unique key holds (default: until its job finishes)."""
    unique_while_running: bool | None = None
    """The unique key also holds while its job runs (default: only while it waits)."""
    headers: Annotated[dict[str, str], AfterValidator(_check_headers)] | None = None
    """Text metadata that travels with the job to ``JobContext.headers`` and ``Job.headers``
    (trace context, tenant ids); not part of the arguments."""
    shard_key: str | None = Field(None, min_length=1, max_length=200)
    """On a sharded queue (``Queue(shards=N)``): jobs of one key go to one shard, so jobs of
    one key and priority start in the order they were enqueued. No effect on one shard."""
    replace: bool | None = None
    """With ``job_id``: a finished job of that id (done, dead, cancelled or aborted) is
    replaced by this one. A job that waits or runs is never replaced (its handle comes
    back, with ``existing`` set)."""

    @model_validator(mode="after")
    def _replace_needs_an_id(self) -> EnqueueOptions:
        if self.replace and self.job_id is None:
            raise ValueError("replace=True needs a job_id: a new id never names a finished job")
        if self.shard_key is not None and self.job_id is not None:
            raise ValueError(
                "shard_key cannot go with job_id: a job with an explicit id lives in its id's "
                "shard, so that it can be found by that id"
            )
        return self


class WorkerSettings(_Frozen):
    """How a worker runs. Every field has a default that suits most deployments."""

    concurrency: int = Field(100, ge=1, le=100_000)
    """Jobs running at once in this worker."""
    lease: PositiveDuration = timedelta(seconds=30)
    """A job's lease: if the worker stops heartbeating for this long, the job is suspected, and
    recovered once two heartbeat intervals more pass without a heartbeat (the wait that keeps
    a step of the server's clock from running a running job twice)."""
    heartbeat: PositiveDuration = timedelta(seconds=10)
    """How often the worker extends all its leases (one call) and publishes its heartbeat."""
    shutdown_grace: Duration = timedelta(seconds=10)
    """On SIGTERM/SIGINT, how long running jobs may take to finish before they are cancelled
    and handed back to the queue."""
    cancel_grace: PositiveDuration = timedelta(seconds=5)
    """After a handler is cancelled (timeout, shutdown), how long it may take to stop. One that
    ignores cancellation longer is abandoned: its slot is freed and its try counted as failed
    (or, at shutdown, its job handed back), while the coroutine or thread is left behind."""
    max_idle_wait: PositiveDuration = timedelta(seconds=5)
    """An idle worker's longest blocking wait before it looks at the queue again."""
    lease_batch: int = Field(100, ge=1, le=10_000)
    """At most this many jobs are taken per lease call."""
    prefetch: bool = True
    """While every slot is busy, lease the next jobs ahead, so that a slot that frees up
    starts one at once instead of after a round trip to Redis. Adaptive: at most as many as
    this worker finished in the last 0.1 s (and at most ``lease_batch``), so only short jobs
    are fetched ahead: a worker busy with long jobs holds none back from idle workers."""
    max_stalls: int = Field(3, ge=0)
    """A job whose lease expired more often than this (its worker kept dying) goes to dead."""
    dead_max_age: PositiveDuration = timedelta(days=7)
    dead_max_len: int = Field(10_000, ge=1)
    """The dead set keeps at most this many jobs; the oldest are dropped first."""
    reconnect_max: PositiveDuration = timedelta(seconds=5)
    """Longest wait between tries to reach Redis again after the connection was lost."""
    blocked_loop_warning: PositiveDuration | None = timedelta(seconds=1)
    """Log an error naming the running job when the event loop is blocked this long (an
    ``async def`` handler calling ``time.sleep`` or CPU-heavy code); ``None``: never."""

    def model_post_init(self, context: object, /) -> None:
        if self.heartbeat >= self.lease:
            raise ValueError(
                f"heartbeat ({self.heartbeat.total_seconds()}s) must be shorter than the lease "
                f"({self.lease.total_seconds()}s), or leases expire between heartbeats"
            )
