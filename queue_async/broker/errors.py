"""The one place redis-py errors become queue_async errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions

from queue_async.exceptions import BrokerConnectionError, BrokerError, QueueAsyncError

# Errors after which the same call may succeed once the server is back.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

# A cluster in the middle of a failover or a slot migration: the cluster client tried again
# (see connections.py) and the cluster still had no master for the slot. Transient, like a
# lost connection. MOVED and ASK never get here: the cluster client follows them.
_CLUSTER_TRANSIENT = (
    redis.exceptions.ClusterDownError,  # CLUSTERDOWN, and MASTERDOWN (a subclass)
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)

# Refusals that end by themselves or need a new connection, not a different call: they count
# as an outage (BrokerConnectionError), so callers back off and repeat the call. READONLY is an
# old master that came back as a replica after a failover: behind Sentinel the connection is
# closed and the repeated call asks the sentinels for the new master.
_OUTAGE_REFUSALS = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
)

# redis-py turns these error codes into classes (and drops the code from the message).
_REFUSAL_CLASSES: tuple[tuple[type[Exception], str], ...] = (
    (
        redis.exceptions.OutOfMemoryError,
        "the server is out of memory (maxmemory): free memory, raise maxmemory or add a server",
    ),
    (
        redis.exceptions.ReadOnlyError,
        "the server is a read-only replica (after a failover?): behind Sentinel the call goes "
        "to the new master once the sentinels name it; with a plain URL, point it at the primary",
    ),
    (
        redis.exceptions.NoPermissionError,
        "the Redis user lacks a permission (ACL): grant it the command and the key pattern",
    ),
    (
        redis.exceptions.AuthenticationError,
        "the server refused the credentials: check the user and password in the URL",
    ),
    (redis.exceptions.BusyLoadingError, "the server is loading its data after a restart"),
)
# Codes redis-py leaves at the start of a plain ResponseError's message.
_REFUSAL_CODES = (
    ("NOREPLICAS", "not enough replicas acknowledged the write (min-replicas-to-write)"),
    ("MISCONF", "the server cannot persist to disk: see its log"),
    ("BUSY", "the server is busy running a long script"),
    ("CROSSSLOT", "the call's keys are in different hash slots of the cluster"),
    ("UNBLOCKED", "the server stopped being a master while the call blocked (a failover?)"),
)
# Codes of refusals that count as an outage (see _OUTAGE_REFUSALS): a blocking wait that a
# master's demotion ended is repeated, on the new master once the sentinels name it.
_OUTAGE_CODES = ("UNBLOCKED",)


def describe_refusal(exc: BaseException) -> str:
    """What a refusal means and what to do about it, with the server's own words."""
    text = str(exc)
    for cls, meaning in _REFUSAL_CLASSES:
        if isinstance(exc, cls):
            return f"{meaning} ({text})"
    for code, meaning in _REFUSAL_CODES:
        if text.startswith(code):
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
            "overloaded or unreachable. The call may or may not have taken effect"
        ) from exc
    except _OUTAGE_REFUSALS as exc:
        raise BrokerConnectionError(f"Redis refused {doing}: {describe_refusal(exc)}") from exc
    except _CLUSTER_TRANSIENT as exc:
        raise BrokerConnectionError(
            f"the Redis Cluster has no master for a slot while {doing} ({exc}): a failover or "
            "slot migration is under way. The call can be repeated once the cluster is back"
        ) from exc
    except CONNECTION_ERRORS as exc:
        if isinstance(exc, redis.exceptions.MaxConnectionsError):
            raise BrokerConnectionError(
                f"every connection to a cluster node was busy while {doing}. Raise "
                "Queue(max_connections=...), or send fewer calls at once"
            ) from exc
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
        error = BrokerConnectionError if str(exc).startswith(_OUTAGE_CODES) else BrokerError
        raise error(f"Redis refused {doing}: {describe_refusal(exc)}") from exc
    except redis.exceptions.RedisClusterException as exc:  # not a RedisError
        raise BrokerError(f"the Redis Cluster client refused {doing}: {exc}") from exc
