"""The one place redis-py errors become queue_async errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions

from queue_async.exceptions import BrokerConnectionError, BrokerError, QueueAsyncError

# Errors after which the same call may succeed once the server is back.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

_REFUSALS = (
    ("OOM", "the server is out of memory (maxmemory): free memory or raise maxmemory"),
    ("READONLY", "the server is a read-only replica (after a failover?): point at the primary"),
    ("NOREPLICAS", "not enough replicas acknowledged the write (min-replicas-to-write)"),
    ("NOPERM", "the Redis user lacks a permission: grant it the command or key pattern"),
    ("NOAUTH", "the server needs a password: put it in the URL (redis://:password@host)"),
    ("WRONGPASS", "the user name or password was refused"),
    ("BUSY", "the server is busy running a long script"),
    ("LOADING", "the server is loading its data set after a restart"),
    ("MISCONF", "the server cannot persist to disk (see its log)"),
)


def describe_refusal(exc: BaseException) -> str:
    """What a refusal means and what to do about it, or the server's own words."""
    text = str(exc)
    for code, meaning in _REFUSALS:
        if text.startswith(code) or f" {code} " in f" {text} ":
            return f"{meaning} ({text})"
    return text


@contextmanager
def translate_errors(doing: str) -> Iterator[None]:
    """Re-raise redis-py errors met while ``doing`` something as queue_async errors.

    ``doing`` names the operation in the user's terms ("enqueueing a job").
    """
    try:
        yield
    except QueueAsyncError:
        raise  # already ours (JobTimeout is an OSError too, via TimeoutError)
    except redis.exceptions.TimeoutError as exc:
        raise BrokerConnectionError(
            f"Redis did not answer in time while {doing} ({exc}): the server is hung, "
            "overloaded or unreachable. The call may or may not have taken effect; repeating "
            "it is safe"
        ) from exc
    except CONNECTION_ERRORS as exc:
        if "No connection available" in str(exc):
            raise BrokerConnectionError(
                f"no Redis connection became free in time while {doing}: every connection of "
                "the queue's pool was busy for pool_timeout. Raise Queue(max_connections=...) "
                "or pool_timeout=..., or send fewer calls at once"
            ) from exc
        raise BrokerConnectionError(
            f"cannot reach Redis while {doing}: {exc}. Check that the server is up and the URL "
            "is right; the call can be repeated once it is back"
        ) from exc
    except redis.exceptions.RedisError as exc:
        raise BrokerError(f"Redis refused {doing}: {describe_refusal(exc)}") from exc
