"""The one place redis-py errors become queue_async errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions

from queue_async.exceptions import BrokerConnectionError, BrokerError, QueueAsyncError

# Errors after which the same call may succeed once the server is back.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


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
