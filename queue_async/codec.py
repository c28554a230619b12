"""How job arguments and results become bytes: JSON (orjson) by default, pluggable."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import orjson

__all__ = ["Codec", "JsonCodec"]


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
            return orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise TypeError(str(exc)) from exc

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)
