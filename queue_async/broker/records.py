"""The two forms of a stored job, read as one: a job hash, or a fresh record.

A job enqueued ready without unique or concurrency key is one field of the queue's ``fresh``
hash (id -> record) until it leaves that form (leased, held, cancelled), when it gets
a job hash of its own (see lua/includes/records.lua). Everything that reads a stored job goes
through ``job_fields_of`` and ``job_from_fields``.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from queue_async.broker.wire import as_bytes, as_text, fresh_job_fields, unpack_headers
from queue_async.codec import Codec, decode_payload
from queue_async.models import Job, JobStatus, ms_to_datetime

__all__ = ["job_fields_of", "job_from_fields"]


def job_fields_of(job: bytes | list[bytes] | None) -> dict[str, bytes] | None:
    """Job hash fields from what read.lua returns for a job (all fields): its fresh
    record, its hash's flat field list, or None."""
    if isinstance(job, list):
        return {as_text(job[i]): as_bytes(job[i + 1]) for i in range(0, len(job), 2)}
    if job is not None:
        return fresh_job_fields(as_bytes(job))
    return None


def job_from_fields(job_id: str, queue: str, codec: Codec, fields: dict[str, bytes]) -> Job:
    """The ``Job`` model of a job's fields (as ``job_fields_of`` returns them)."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    # An undecodable payload is shown as no arguments; the worker reports it as the error.
    with contextlib.suppress(ValueError):
        args, kwargs = decode_payload(codec, fields.get("payload", b""))
    result = None
    if "result" in fields:
        try:
            result = codec.decode(fields["result"])
        except Exception:  # noqa: BLE001 - as above
            result = fields["result"].decode(errors="replace")

    def ms(name: str) -> datetime | None:
        value = fields.get(name)
        return ms_to_datetime(int(value)) if value is not None else None

    headers: dict[str, str] = {}
    with contextlib.suppress(ValueError):  # as the payload: the worker reports it
        headers = unpack_headers(fields.get("headers", b""))

    def text(name: str) -> str | None:
        value = fields.get(name)
        return value.decode(errors="replace") if value is not None else None

    return Job(
        id=job_id,
        queue=queue,
        task=text("task") or "",
        status=JobStatus(fields["state"].decode()),
        args=args,
        kwargs=kwargs,
        attempts=_int(fields.get("attempts")),
        priority=_int(fields.get("priority")),
        enqueued_at=ms("enqueued"),
        scheduled_for=ms("due"),
        started_at=ms("started"),
        finished_at=ms("finished"),
        error=text("error"),
        result=result,
        worker=text("worker"),
        checkin=text("checkin"),
        progress=float(fields["progress"]) if "progress" in fields else None,
        checkin_at=ms("checkin_at"),
        headers=headers,
    )


def _int(value: bytes | None) -> int:
    """An integer field; 0 when unset or not an integer (written by a foreign producer)."""
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0
