"""Every error queue_async raises, as one tree.

```
QueueAsyncError
├── ConfigurationError (ValueError)      bad options, bad names, bad settings
├── BrokerError                          Redis/Valkey could not do what was asked
│   ├── BrokerConnectionError (ConnectionError)   the server cannot be reached
│   ├── EnqueueIncomplete                a large enqueue_many failed part way
│   └── NotReplicated                    enqueued, but fewer replicas confirmed than asked
├── EncodeError (TypeError)              job arguments or a result cannot be encoded
├── PayloadTooLarge (EncodeError)        encoded arguments exceed the queue's limit
├── TaskNotRegistered (LookupError)      no handler is known under that task name
└── JobError                             about one job; carries ``job_id``
    ├── JobNotFound (LookupError)        no such job (never enqueued, or expired)
    ├── JobFailed                        the job died; ``error`` holds the remote error text
    ├── JobCancelled                     the job was cancelled before it could finish
    └── JobTimeout (TimeoutError)        waiting for a result took longer than asked

Signals a handler raises on purpose (not errors of the library):
Retry    try again later, at a chosen time
Fatal    fail now, skip remaining tries
```

This module imports nothing from the package.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

__all__ = [
    "BrokerConnectionError",
    "BrokerError",
    "ConfigurationError",
    "EncodeError",
    "EnqueueIncomplete",
    "Fatal",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobTimeout",
    "NotReplicated",
    "PayloadTooLarge",
    "QueueAsyncError",
    "Retry",
    "TaskNotRegistered",
]


class QueueAsyncError(Exception):
    """Base class of every error raised by queue_async."""


class ConfigurationError(QueueAsyncError, ValueError):
    """An option, name or setting is invalid."""


class BrokerError(QueueAsyncError):
    """Redis or Valkey answered with an error, or a script reply made no sense."""


class BrokerConnectionError(BrokerError, ConnectionError):
    """The Redis/Valkey server cannot be reached (down, restarting, or the network is cut)."""


class EnqueueIncomplete(BrokerError):
    """An ``enqueue_many`` too large for one transaction failed after its first one.

    Attributes:
        landed: handles of the jobs that were enqueued (their transactions committed).
        unsure: handles of the transaction that failed: enqueued or not, depending on
            whether the server ran it before the error (a timeout cannot tell).
        not_sent: handles of the jobs that were never sent.
        remaining: the jobs of ``unsure`` and ``not_sent`` as specs with their ids fixed:
            ``await queue.enqueue_many(exc.remaining)`` finishes the batch without
            duplicating a job that did land.
    """

    def __init__(
        self,
        message: str,
        *,
        landed: list[Any],
        unsure: list[Any],
        not_sent: list[Any],
        remaining: list[Any],
    ) -> None:
        super().__init__(message)
        self.landed = landed
        self.unsure = unsure
        self.not_sent = not_sent
        self.remaining = remaining


class NotReplicated(BrokerError):
    """The jobs were enqueued on the master, but fewer replicas than ``Queue(durability=...)``
    asks for confirmed them within its timeout (or, with ``local_fsync``, the master did not
    write them to disk in time).

    The jobs are in the queue and will run. Only their survival of a failover is in doubt:
    repeat the call with the same job ids (``exc.handles`` name them; ``exc.remaining`` are
    the specs with their ids fixed) to wait again without enqueueing anything twice, or
    accept the risk and go on.

    Attributes:
        handles: handles of the jobs of the call, as enqueued on the master.
        remaining: the call's jobs as specs with their ids fixed, for a safe repeat (empty
            when the call was a single ``enqueue``: repeat it with ``job_id=exc.handles[0].id``).
        replicas: how many replicas confirmed.
        wanted: how many were asked for.
        fsynced: whether the master confirmed its own disk write (True when not asked).
    """

    def __init__(
        self,
        message: str,
        *,
        handles: list[Any],
        remaining: list[Any],
        replicas: int,
        wanted: int,
        fsynced: bool,
    ) -> None:
        super().__init__(message)
        self.handles = handles
        self.remaining = remaining
        self.replicas = replicas
        self.wanted = wanted
        self.fsynced = fsynced


class EncodeError(QueueAsyncError, TypeError):
    """Job arguments or a job result cannot be encoded by the queue's codec."""


class PayloadTooLarge(EncodeError):
    """The encoded job arguments are larger than the queue's ``max_payload_bytes``."""


class TaskNotRegistered(ConfigurationError, LookupError):
    """No handler is registered under this task name."""


class JobError(QueueAsyncError):
    """An error about one job."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobNotFound(JobError, LookupError):
    """The job does not exist: never enqueued, deleted, or its result expired."""


class JobFailed(JobError):
    """The job failed for good (it is in the dead set); ``error`` is the remote error text."""

    def __init__(self, message: str, *, job_id: str, error: str | None) -> None:
        super().__init__(message, job_id=job_id)
        self.error = error


class JobCancelled(JobError):
    """The job was cancelled before it finished."""


class JobAborted(JobCancelled):
    """The job was stopped while running, by ``handle.abort()``."""


class JobTimeout(JobError, TimeoutError):
    """Waiting for the job's result took longer than the given timeout."""


_DEFER_MAX = 366 * 86_400.0


class Retry(Exception):
    """Raise from a handler to run the job again later.

    Args:
        defer: how long to wait before the next try (seconds or a timedelta); ``None`` uses
            the task's backoff policy.

    The try still counts against the task's ``retries``.
    """

    def __init__(self, defer: float | timedelta | None = None) -> None:
        seconds = defer.total_seconds() if isinstance(defer, timedelta) else defer
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= _DEFER_MAX
        ):
            raise ConfigurationError(
                f"Retry(defer=...) takes None, a timedelta, or 0 to {_DEFER_MAX:.0f} seconds "
                f"(a year), not {defer!r}"
            )
        super().__init__(f"retry requested (defer={seconds!r}s)")
        self.defer_seconds = seconds


class Fatal(Exception):
    """Raise from a handler to fail the job now: remaining tries are skipped, it goes to dead."""
