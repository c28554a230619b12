"""The packed-fields format shared with the Lua scripts (see pack in lua/_lib.lua).

Fields joined as ``<length>:<bytes>`` each: binary-safe, and one Redis argument instead of
many (redis-py spends more on packing an argument than the server does on using it).
"""

from __future__ import annotations

__all__ = ["fresh_job_fields", "pack_fields", "pack_job", "unpack_fields"]

# Options that are job hash fields of their own when set, by their place in the packed
# options (see enqueue.lua).
_OPTIONAL = {3: "retries", 4: "timeout", 5: "keep"}


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
    """The job hash fields of a fresh job's record (see the top of lua/_lib.lua)."""
    enqueued, options, task, payload = unpack_fields(record)
    fields = {"state": b"ready", "attempts": b"0", "task": task, "payload": payload}
    fields["enqueued"] = enqueued
    opts = unpack_fields(options)
    if opts and opts[0] not in (b"", b"0"):
        fields["priority"] = opts[0]
    for place, name in _OPTIONAL.items():
        if place < len(opts) and opts[place]:
            fields[name] = opts[place]
    return fields
