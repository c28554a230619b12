"""Listing, retrying, deleting and purging a queue's jobs, in bounded steps.

Each script call looks at a bounded number of index entries (see lua/includes/listing.lua),
so that no call holds the server for long; a bulk action is many such calls, each atomic.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from queue_async.broker.records import job_fields_of, job_from_fields
from queue_async.exceptions import ConfigurationError, JobNotFound
from queue_async.identifiers import check_job_id, check_task_name
from queue_async.models import JobPage

if TYPE_CHECKING:
    from queue_async.producer.queue import Queue

__all__ = ["delete", "page", "purge", "retry", "retry_dead"]

LISTED = ("ready", "scheduled", "active", "dead", "done")
PURGED = ("ready", "scheduled", "dead", "done")
_BUDGET = 1000
"""Index entries one listing call looks at, at most, when it filters."""
_BULK_BUDGET = 500
"""Index entries one call of a bulk action (retry, purge) looks at, at most: each one it
acts on costs a dozen commands, so a step stays well under the time other clients notice."""
_MAX_PAGE = 1000
_MAX_SEARCH = 200

Progress = Callable[[int], None]
"""Called after each step of a bulk action with the number of jobs done so far."""


def _state(state: str, allowed: tuple[str, ...]) -> str:
    if state not in allowed:
        raise ConfigurationError(f"state must be one of {', '.join(allowed)}; not {state!r}")
    return state


def _filters(task: str | None, search: str | None) -> tuple[str, str]:
    if task is not None:
        check_task_name(task)
    if search is not None and (not isinstance(search, str) or len(search) > _MAX_SEARCH):
        raise ConfigurationError(f"search must be text of at most {_MAX_SEARCH} characters")
    return task or "", (search or "").lower()


def check_limit(limit: int, most: int | None = None) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"limit must be a positive integer, not {limit!r}")
    if most is not None and limit > most:
        raise ConfigurationError(f"limit must be at most {most}, not {limit}")
    return limit


def encode_cursor(raw: str) -> str | None:
    """The cursor a caller sees: URL-safe, opaque; None at the end of the walk."""
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=") if raw else None


def decode_cursor(cursor: str | None, state: str) -> str:
    if cursor is None or cursor == "":
        return ""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        part, place, job_id = raw.split(" ", 2)
        int(place)
        check_job_id(job_id)
    except (ValueError, binascii.Error, ConfigurationError):
        raise ConfigurationError(
            f"cursor {cursor!r} is not one a listing of this queue returned"
        ) from None
    allowed = ("a", "f", "c") if state == "ready" else ("z",)
    if part not in allowed:
        raise ConfigurationError(f"cursor {cursor!r} comes from a listing of another state")
    return raw


def _at_ms(at: datetime | timedelta | None) -> int:
    if at is None:
        return 0
    if isinstance(at, timedelta):
        return int((time.time() + at.total_seconds()) * 1000)
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ConfigurationError("at must be an aware datetime (with a time zone)")
        return int(at.timestamp() * 1000)
    raise ConfigurationError(f"at must be a datetime or a timedelta, not {at!r}")


async def _missing(queue: Queue, job_id: str) -> bool:
    return await queue.job_status(job_id) is None


def _not_found(queue: Queue, job_id: str) -> JobNotFound:
    return JobNotFound(
        f"queue {queue.name!r} has no job {job_id!r} (it may belong to another queue, or "
        "its record expired)",
        job_id=job_id,
    )


async def page(
    queue: Queue,
    state: str,
    *,
    task: str | None,
    search: str | None,
    order: Literal["oldest", "newest"],
    cursor: str | None,
    limit: int,
) -> JobPage:
    _state(state, LISTED)
    if order not in ("oldest", "newest"):
        raise ConfigurationError(f"order must be 'oldest' or 'newest', not {order!r}")
    task_name, text = _filters(task, search)
    check_limit(limit, _MAX_PAGE)
    raw = decode_cursor(cursor, state)
    reply = await queue._broker.scripts.browse(
        state,
        order,
        raw,
        limit,
        _BUDGET if task_name or text else limit,
        task_name,
        text,
    )
    next_raw, scanned, rest = reply[0], int(reply[1]), reply[2:]
    jobs = []
    for i in range(0, len(rest), 2):
        job_id = rest[i].decode() if isinstance(rest[i], bytes) else str(rest[i])
        fields = job_fields_of(rest[i + 1])
        if fields is not None:
            jobs.append(job_from_fields(job_id, queue.name, queue.codec, fields))
    next_text = next_raw.decode() if isinstance(next_raw, bytes) else str(next_raw)
    return JobPage(jobs=jobs, cursor=encode_cursor(next_text), scanned=scanned)


async def retry(queue: Queue, job_id: str, *, at: datetime | timedelta | None) -> bool:
    job_id = queue.job(job_id).id  # JobNotFound for text that cannot be an id
    count, _, _ = await queue._broker.scripts.retry(_at_ms(at), "", 1, 1, "", "", [job_id])
    if count == 0 and await _missing(queue, job_id):
        raise _not_found(queue, job_id)
    return count == 1


async def retry_dead(
    queue: Queue,
    *,
    task: str | None,
    search: str | None,
    limit: int,
    at: datetime | timedelta | None,
    progress: Progress | None = None,
) -> int:
    task_name, text = _filters(task, search)
    check_limit(limit)
    at_ms = _at_ms(at)
    scripts = queue._broker.scripts

    def step(cursor: str, most: int) -> Awaitable[tuple[int, str, int]]:
        return scripts.retry(at_ms, cursor, most, _BULK_BUDGET, task_name, text, [])

    return await _in_steps(step, limit, progress)


async def delete(queue: Queue, job_id: str) -> bool:
    job_id = queue.job(job_id).id  # JobNotFound for text that cannot be an id
    count, _, _ = await queue._broker.scripts.delete("", "", 1, 1, "", "", [job_id])
    if count == 0 and await _missing(queue, job_id):
        raise _not_found(queue, job_id)
    return count == 1


async def purge(
    queue: Queue,
    state: str,
    *,
    task: str | None,
    search: str | None,
    limit: int,
    progress: Progress | None = None,
) -> int:
    _state(state, PURGED)
    task_name, text = _filters(task, search)
    check_limit(limit)
    scripts = queue._broker.scripts

    def step(cursor: str, most: int) -> Awaitable[tuple[int, str, int]]:
        return scripts.delete(state, cursor, most, _BULK_BUDGET, task_name, text, [])

    return await _in_steps(step, limit, progress)


async def _in_steps(
    step: Callable[[str, int], Awaitable[tuple[int, str, int]]],
    limit: int,
    progress: Progress | None,
) -> int:
    """Call one bulk script (``step(cursor, at most)`` -> done, cursor, entries looked at)
    until ``limit`` jobs are done or the walk ends. The walk goes on from its cursor, which
    holds while the jobs it acted on leave their state."""
    done, cursor = 0, ""
    while done < limit:
        count, cursor, scanned = await step(cursor, min(limit - done, _BULK_BUDGET))
        done += count
        if progress is not None:
            progress(done)
        if scanned == 0 or cursor == "":
            break
    return done
