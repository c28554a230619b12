"""The formats the Lua scripts and Python share, each named once (docs/wire-format.md).

Packed fields: fields joined as ``<length>:<bytes>`` each: binary-safe, and one Redis argument
instead of many (redis-py spends more on packing an argument than the server does on using
it). The positional formats below have the same names in lua/includes/wire.lua, and
tests/lua/test_wire.py holds the two equal.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "CARRIED_RESULT_MAX",
    "COMPLETION_FIELDS",
    "ENDED_FIELDS",
    "ENQUEUE_FIELDS",
    "FAIL_ABORTED",
    "FAIL_DEAD",
    "LEASED_FIELDS",
    "OPTIONAL",
    "Leased",
    "Opt",
    "as_bytes",
    "as_text",
    "fresh_job_fields",
    "pack_fields",
    "pack_headers",
    "pack_job",
    "unpack_fields",
    "unpack_headers",
]


class Opt(IntEnum):
    """Places in a job's packed options (enqueue.lua's ``OPT``); "" where the default applies."""

    PRIORITY = 0
    DELAY = 1
    """ms from now"""
    AT = 2
    """epoch ms; wins over DELAY"""
    RETRIES = 3
    TIMEOUT = 4
    """ms"""
    KEEP = 5
    """result TTL, ms"""
    CKEY = 6
    """concurrency key"""
    CLIMIT = 7
    UKEY = 8
    """unique key"""
    UWINDOW = 9
    """ms"""
    URUNNING = 10
    """"1": the unique key also holds while the job runs"""
    HEADERS = 11
    """the job's headers, packed as name, value, name, value..."""
    REPLACE = 12
    """"1": a finished job (done, dead, cancelled, aborted) with this id is replaced"""


OPTIONAL = (Opt.RETRIES, Opt.TIMEOUT, Opt.KEEP, Opt.HEADERS)
"""Options stored as job hash fields of the same name (lower case) when set."""

ENQUEUE_FIELDS = ("id", "options", "task", "payload")
"""One job in enqueue.lua's ARGV[2], in order."""


class Leased(IntEnum):
    """Places of one leased job's fields, in lease.lua's reply and in a worker's inbox."""

    ID = 0
    TASK = 1
    PAYLOAD = 2
    ATTEMPTS = 3
    ENQUEUED = 4
    RETRIES = 5
    TIMEOUT = 6
    KEEP = 7
    TOKEN = 8
    HEADERS = 9
    READY = 10
    """since when the job waited ready (ms): its enqueue, due time or requeue"""


LEASED_FIELDS = len(Leased)
COMPLETION_FIELDS = ("id", "token", "result", "keep")
"""One job in complete.lua's ARGV[2], in order."""
ENDED_FIELDS = ("id", "task", "result")
"""One job in a message on a queue's ended channel, in order: task and result are both empty
unless the job is done and the message carries its result (see lua/includes/final.lua)."""
CARRIED_RESULT_MAX = 4096
"""Bytes of a result, at most, that the ended channel carries to its waiters."""
FAIL_DEAD = -1
"""fail.lua's retry delay for "no next try: to dead"."""
FAIL_ABORTED = -2
"""fail.lua's retry delay for "ends as aborted"."""


def as_text(value: bytes | str) -> str:
    """A reply or field as text (redis-py gives bytes, or str with decode_responses)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    """A reply or field as bytes."""
    return value if isinstance(value, bytes) else value.encode()


def pack_fields(fields: list[bytes | str | int]) -> bytes:
    """Join fields as ``<length>:<bytes>`` runs."""
    parts = []
    for field in fields:
        raw = field if isinstance(field, bytes) else str(field).encode()
        parts.append(b"%d:%s" % (len(raw), raw))
    return b"".join(parts)


def pack_job(job_id: str, options: bytes, task: str, payload: bytes) -> bytes:
    """One job as enqueue.lua reads it: id, options, task, payload, packed."""
    raw_id, raw_task = job_id.encode(), task.encode()
    return b"%d:%s%d:%s%d:%s%d:%s" % (
        len(raw_id),
        raw_id,
        len(options),
        options,
        len(raw_task),
        raw_task,
        len(payload),
        payload,
    )


def pack_headers(headers: dict[str, str]) -> bytes:
    """Headers as one packed option: name, value, name, value..."""
    return pack_fields([part for item in headers.items() for part in item])


def unpack_headers(packed: bytes) -> dict[str, str]:
    """The inverse of ``pack_headers``; {} for "". ValueError if malformed."""
    if not packed:
        return {}
    try:
        parts = unpack_fields(packed)
    except ValueError:
        raise ValueError(f"the job's headers are malformed: {packed[:100]!r}") from None
    if len(parts) % 2:
        raise ValueError(
            f"the job's headers are malformed (a name without value): {packed[:100]!r}"
        )
    return {
        parts[i].decode(errors="replace"): parts[i + 1].decode(errors="replace")
        for i in range(0, len(parts) - 1, 2)
    }


def unpack_fields(packed: bytes) -> list[bytes]:
    """Split ``<length>:<bytes>`` runs back into fields."""
    fields = []
    start = 0
    while start < len(packed):
        colon = packed.index(b":", start)
        end = colon + 1 + int(packed[start:colon])
        fields.append(packed[colon + 1 : end])
        start = end
    return fields


def fresh_job_fields(record: bytes) -> dict[str, bytes]:
    """The job hash fields of a fresh job's record (see lua/includes/records.lua)."""
    enqueued, options, task, payload = unpack_fields(record)
    fields = {"state": b"ready", "attempts": b"0", "task": task, "payload": payload}
    fields["enqueued"] = enqueued
    opts = unpack_fields(options)
    if opts and opts[0] not in (b"", b"0"):
        fields["priority"] = opts[0]
    for place in OPTIONAL:
        if place < len(opts) and opts[place]:
            fields[place.name.lower()] = opts[place]
    return fields
