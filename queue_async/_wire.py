"""The packed-fields format shared with the Lua scripts (see pack in lua/_lib.lua).

Fields joined as ``<length>:<bytes>`` each: binary-safe, and one Redis argument instead of
many (redis-py spends more on packing an argument than the server does on using it).
"""

from __future__ import annotations

__all__ = ["pack_fields", "unpack_fields"]


def pack_fields(fields: list[bytes | str | int]) -> bytes:
    """Join fields as ``<length>:<bytes>`` runs."""
    parts = []
    for field in fields:
        raw = field if isinstance(field, bytes) else str(field).encode()
        parts.append(b"%d:%s" % (len(raw), raw))
    return b"".join(parts)


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
