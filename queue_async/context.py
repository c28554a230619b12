"""What a handler sees of its job and its worker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from queue_async.models import ms_to_datetime

if TYPE_CHECKING:
    from queue_async.queue import Queue

__all__ = ["JobContext"]


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

    @property
    def enqueued_at(self) -> datetime:
        """When the job was first enqueued (server clock, UTC)."""
        moment = ms_to_datetime(self.enqueued_ms)
        assert moment is not None
        return moment
