"""Our Redis clients, and the one place redis-py errors become queue_async errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from queue_async.exceptions import BrokerConnectionError, BrokerError, QueueAsyncError

# Errors after which the same call may succeed once the server is back.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def connect(url: str) -> redis.asyncio.Redis:
    """A client for ``url`` that survives a server restart without failing a call.

    A client from a plain URL does not retry, so the first call on each pooled connection
    after a restart fails on the dead socket. Ours reconnects and repeats the call a few
    times, which is safe for every call we make: enqueue is idempotent by job id, and
    complete/fail/extend carry the lease token, so a repeat of a call that did land is
    refused rather than applied twice. A call still fails when the server stays away
    (after about 0.5 s), with ``BrokerConnectionError``.
    """
    return redis.asyncio.Redis.from_url(
        url,
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.25), retries=3),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


@contextmanager
def translate_errors(doing: str) -> Iterator[None]:
    """Re-raise redis-py errors met while ``doing`` something as queue_async errors."""
    try:
        yield
    except QueueAsyncError:
        raise  # already ours (JobTimeout is an OSError too, via TimeoutError)
    except CONNECTION_ERRORS as exc:
        raise BrokerConnectionError(
            f"cannot reach Redis while {doing}: {exc}. Check that the server is up and the "
            "URL is right; the call can be repeated once it is back"
        ) from exc
    except redis.exceptions.RedisError as exc:
        raise BrokerError(f"Redis refused {doing}: {exc}") from exc
