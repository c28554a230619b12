"""The connections of one queue: separate, bounded pools, and timeouts the library sets.

A web app sends one enqueue per request from hundreds of requests at once, while result
waiters sit on long polls and a worker in the same process leases, heartbeats and records
completions. So each kind of use gets its own pool, and no kind can starve another:

- producers (enqueue, reads, admin calls): one pool of ``max_connections``; a caller waits
  up to ``pool_timeout`` for a free connection instead of failing;
- result waiters: one pub/sub connection per ``Queue`` (see ``producer/waiters.py``);
- each worker: a small pool for its own calls, and one connection per server for its
  blocking wait, which alone has no socket read timeout: a blocking call is bounded by its
  own timeout plus ``command_timeout``, whatever the client's ``socket_timeout`` says.

Every pool is made from the same connection settings (the URL's, or those of the client the
user passed in), so TLS, credentials and the database are the same everywhere.

A connection belongs to the event loop it was opened on. Every pool here notices when it is
used from a new loop after the old one stopped (a module-level ``Queue`` shared by tests that
each run their own loop, or by successive ``asyncio.run`` calls): it closes the old loop's
sockets without that loop and opens new connections, instead of failing with "Event loop is
closed".
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import redis.asyncio
import redis.exceptions
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff

from queue_async.broker.errors import translate_errors
from queue_async.exceptions import BrokerConnectionError, ConfigurationError

T = TypeVar("T")

# How many times a call is repeated after a connection error (server restarted, connection
# reset) before it fails; a timeout is not repeated, so a silent server fails a call after
# one ``command_timeout``.
_RETRIES = 3
# A worker's own calls: lease, completions, heartbeat, failures and check-ins of its jobs.
_WORKER_POOL = 16


class _Jitter(AbstractBackoff):
    """Exponential backoff with full jitter, 20 ms doubling up to 250 ms (every redis-py)."""

    def compute(self, failures: int) -> float:
        return random.uniform(0, min(0.25, 0.02 * 2**failures))

    def reset(self) -> None:
        """Nothing to reset: the wait depends only on the count of failures."""


def _retry() -> Retry:
    return Retry(_Jitter(), _RETRIES, supported_errors=(redis.exceptions.ConnectionError,))


class _LoopBoundPool(BlockingConnectionPool):
    """A waiting pool whose connections are dropped when it is used from a new event loop
    after the one they were opened on stopped (see the module's docstring)."""

    _loop: asyncio.AbstractEventLoop | None = None

    def _on_this_loop(self) -> None:
        loop = asyncio.get_running_loop()
        old = self._loop
        if old is loop:
            return
        if old is not None and (old.is_closed() or not old.is_running()):
            for connection in [*self._available_connections, *self._in_use_connections]:
                _drop_transport(connection)
            self.reset()  # type: ignore[no-untyped-call, unused-ignore]
            self._condition = asyncio.Condition()
        self._loop = loop

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self._on_this_loop()
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self._on_this_loop()
        await super().disconnect(*args, **kwargs)


def _drop_transport(connection: Any) -> None:
    """Close a connection opened on an event loop that has stopped, without that loop (its
    transport cannot schedule its own close any more), so no socket is left open."""
    writer = getattr(connection, "_writer", None)
    connection._reader = None
    connection._writer = None
    with contextlib.suppress(Exception):
        connection._parser.on_disconnect()
    if writer is None:
        return
    transport = writer.transport
    try:
        transport.close()
    except RuntimeError:  # the loop is closed: close the socket itself
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            sock.close()
            transport._sock = None


@dataclass(frozen=True, slots=True)
class Limits:
    """The connection policy of one queue (see ``Queue``)."""

    max_connections: int = 20
    pool_timeout: float = 10.0
    connect_timeout: float = 5.0
    command_timeout: float = 5.0

    def check(self) -> Limits:
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise ConfigurationError(
                f"max_connections must be a positive integer, got {self.max_connections!r}"
            )
        for name in ("pool_timeout", "connect_timeout", "command_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(
                    f"{name} must be a positive number of seconds, not {value!r}"
                )
        return self


class Connections:
    """The pools of one ``Queue``: the producers' client, and clients made for workers."""

    def __init__(self, source: str | redis.asyncio.Redis, limits: Limits) -> None:
        self.limits = limits.check()
        if isinstance(source, str):
            try:
                pool = _LoopBoundPool.from_url(
                    source,
                    max_connections=limits.max_connections,
                    timeout=limits.pool_timeout,
                    socket_connect_timeout=limits.connect_timeout,
                    socket_timeout=limits.command_timeout,
                    retry=_retry(),
                )
            except (ValueError, TypeError) as exc:
                raise ConfigurationError(
                    f"cannot use the Redis URL {_redact(source)!r}: {exc}. Use "
                    "redis://host:port/db, rediss:// for TLS, or unix:///path/to/socket"
                ) from exc
            self.client = redis.asyncio.Redis(connection_pool=pool)
            self.owns_client = True
        elif isinstance(source, redis.asyncio.Redis):
            if source.connection_pool.connection_kwargs.get("decode_responses"):
                raise ConfigurationError(
                    "the Redis client must be created with decode_responses=False: job "
                    "payloads are bytes"
                )
            self.client = source
            self.owns_client = False
        else:
            raise ConfigurationError(
                f"Queue() takes a Redis URL or a redis.asyncio.Redis client, not {type(source)!r}"
            )
        base = self.client.connection_pool
        self._connection_class = base.connection_class
        self._kwargs: dict[str, Any] = dict(base.connection_kwargs)
        if not self.owns_client:
            # The producers get a bounded, waiting pool of ours on the client's settings:
            # the user's own pool may fail past its size (redis-py 8: 100) instead of waiting.
            self.client = self.make_client(limits.max_connections).redis
            self.owns_client = True

    @property
    def server(self) -> tuple[Any, ...]:
        """What tells two queues' servers apart (workers wait on each server once)."""
        k = self._kwargs
        return (self._connection_class, k.get("host"), k.get("port"), k.get("path"), k.get("db"))

    def make_client(self, max_connections: int, *, blocking_reads: bool = False) -> Client:
        """A new client on the same server with a bounded pool of its own.

        ``blocking_reads``: no socket read timeout, for calls that block on the server (each
        caller bounds them with ``Client.blocking``).
        """
        kwargs = {
            **self._kwargs,
            "socket_connect_timeout": self.limits.connect_timeout,
            "socket_timeout": None if blocking_reads else self._kwargs.get("socket_timeout"),
            "retry": _retry(),
        }
        if not blocking_reads and kwargs["socket_timeout"] is None:
            kwargs["socket_timeout"] = self.limits.command_timeout
        pool = _LoopBoundPool(
            connection_class=self._connection_class,
            max_connections=max_connections,
            timeout=self.limits.pool_timeout,
            **kwargs,
        )
        return Client(redis.asyncio.Redis(connection_pool=pool), self.limits)

    def worker_client(self) -> Client:
        """A pool for one worker's own calls, apart from the producers' pool."""
        return self.make_client(_WORKER_POOL)

    async def aclose(self) -> None:
        if self.owns_client:
            await close_client(self.client)


class Client:
    """A client of ours and the limits it was made with."""

    def __init__(self, redis_: redis.asyncio.Redis, limits: Limits) -> None:
        self.redis = redis_
        self.limits = limits

    async def blocking(self, seconds: float, call: Callable[[], Awaitable[T]], doing: str) -> T:
        """Run a call that blocks on the server for up to ``seconds``, bounded by that plus
        ``command_timeout`` (a connection cut mid-call is closed, never reused)."""
        bound = seconds + self.limits.command_timeout
        with translate_errors(doing):
            with anyio.move_on_after(bound) as scope:
                return await call()
        assert scope.cancelled_caught
        raise BrokerConnectionError(
            f"Redis did not answer within {bound:g} s while {doing} (a blocking wait of "
            f"{seconds:g} s); the server may be overloaded or unreachable"
        )

    async def aclose(self) -> None:
        await close_client(self.redis)


async def close_client(client: redis.asyncio.Redis) -> None:
    """Close a client made on a pool of ours, and the pool (``aclose`` leaves it open)."""
    await client.aclose()
    await client.connection_pool.disconnect()


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://***@{host}"
