"""How job arguments and results become bytes: JSON (orjson) by default, pluggable."""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import orjson

__all__ = ["Codec", "JsonCodec", "decode_payload"]


@runtime_checkable
class Codec(Protocol):
    """Turns job arguments and results into bytes and back.

    ``encode`` raises ``TypeError`` or ``ValueError`` for a value it cannot encode; the
    queue turns that into an :class:`~queue_async.EncodeError` naming the task.
    """

    def encode(self, value: Any) -> bytes:
        """Encode one value."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode what :meth:`encode` produced."""
        ...


class JsonCodec:
    """JSON through orjson: fast, strict (no NaN, keys must be strings), and readable in
    redis-cli. Tuples come back as lists; datetimes come back as ISO strings."""

    def encode(self, value: Any) -> bytes:
        try:
            data = orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise TypeError(str(exc)) from exc
        # orjson writes NaN and infinities as null: refuse them rather than change the value.
        if b"null" in data and value is not None and _has_non_finite(value):
            raise ValueError("NaN and infinite floats cannot be encoded as JSON")
        return data

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


_ARGS_TYPES = (list, tuple)


def decode_payload(codec: Codec, payload: bytes) -> tuple[list[Any], dict[str, Any]]:
    """A job's stored ``[args, kwargs]``; raises ``ValueError`` for anything else."""
    try:
        args, kwargs = codec.decode(payload)
    except Exception as exc:  # a codec may raise anything on garbage
        raise ValueError(f"payload cannot be decoded: {exc!r}") from exc
    # A codec that round-trips tuples (pickle, msgpack with use_list=False) gives them back.
    # A tuple of types, not list | tuple: that builds a union object on every call.
    if not isinstance(args, _ARGS_TYPES) or not isinstance(kwargs, dict):
        # One error type for every kind of bad payload, so callers catch one thing.
        raise ValueError("payload cannot be decoded: it is not [args, kwargs]")  # noqa: TRY004
    return list(args), kwargs
