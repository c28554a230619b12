"""What a handler sees of its job and its worker."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from queue_async.models import ms_to_datetime

if TYPE_CHECKING:
    from queue_async.producer.queue import Queue

CheckIn = Callable[[str, str, str, str], Awaitable[bool]]
"""Records a check-in: (job id, lease token, message, progress) -> whether the try holds
the job (checkin.lua, through the worker's connections)."""

__all__ = ["JobContext"]

_MESSAGE_MAX = 4096


@dataclass(slots=True)
class JobContext:
    """Passed as the first argument to handlers that declare it (annotated ``JobContext``).

    ``state`` is the dict the worker's startup hooks filled (database pools, HTTP clients):
    shared by every job of that worker.
    """

    job_id: str
    task: str
    attempt: int
    """This try's number, from 1."""
    queue: Queue
    state: dict[str, Any]
    worker_id: str
    enqueued_ms: int
    headers: dict[str, str] = field(default_factory=dict)
    """The job's headers (``task.options(headers=...)``): trace context, tenant ids."""
    token: str = field(default="", repr=False)
    """This try's lease token: check-ins from a try whose lease was lost are refused."""
    will_retry: bool | None = None
    """Set once the handler has failed, before the failure leaves the middleware: True if
    another try follows (in ``retry_in`` seconds), False if the job goes to dead (or ends
    aborted). None while the handler runs or after it succeeded."""
    retry_in: float | None = None
    """Seconds until the next try, when ``will_retry``."""
    _checkin: CheckIn | None = field(default=None, repr=False, compare=False)

    @property
    def enqueued_at(self) -> datetime:
        """When the job was first enqueued (server clock, UTC)."""
        moment = ms_to_datetime(self.enqueued_ms)
        assert moment is not None
        return moment

    async def checkin(self, message: str | None = None, *, progress: float | None = None) -> bool:
        """Record what the job is doing, e.g. ``await ctx.checkin("row 335000 of 1M")``.

        The message (at most 4,096 characters) and ``progress`` (a fraction from 0 to 1) show
        in ``handle.info()`` with the time of the check-in. Returns False if this try no longer
        holds the job (its lease was lost), in which case nothing is recorded.
        """
        if message is not None and (not isinstance(message, str) or len(message) > _MESSAGE_MAX):
            raise ValueError(f"a check-in message is a str of at most {_MESSAGE_MAX} characters")
        if progress is not None and (
            isinstance(progress, bool)
            or not isinstance(progress, int | float)
            or not math.isfinite(progress)
            or not 0 <= progress <= 1
        ):
            raise ValueError(f"progress is a fraction from 0 to 1, not {progress!r}")
        if self._checkin is None:
            raise RuntimeError("this JobContext was not made by a worker: it cannot check in")
        return await self._checkin(
            self.job_id,
            self.token,
            message or "",
            "" if progress is None else repr(float(progress)),
        )

    async def progress(self, fraction: float) -> bool:
        """Record how much of the job is done, from 0 to 1: ``await ctx.progress(0.33)``."""
        return await self.checkin(progress=fraction)
