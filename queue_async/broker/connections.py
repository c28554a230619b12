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

On a Redis/Valkey Cluster (a ``redis+cluster://`` or ``rediss+cluster://`` URL, or a
``redis.asyncio.RedisCluster`` client) each "pool" above is a ``RedisCluster`` client of our
own, made from the same startup nodes and settings: it routes each call to the master of its
key's slot and follows MOVED/ASK redirects and failovers itself. Its per-node pools do not
wait for a free connection, so the client lets at most ``max_connections`` of its calls run
at once and a caller past them waits, up to ``pool_timeout`` (``_CallLimit``). Such a
client is not rebound to a new event loop: make a cluster ``Queue`` on the loop that uses
it.

Behind Redis Sentinel (a ``redis+sentinel://`` or ``rediss+sentinel://`` URL, or a client
from ``redis.asyncio.sentinel.Sentinel(...).master_for(name)``) each "pool" above is a
waiting, loop-bound pool as for one server, whose connections ask the sentinels for the
service's master each time they connect (redis-py's ``SentinelConnectionPool``); the
queue's sentinel clients are its own, made from the same sentinel addresses and settings.
After a failover a connection to the old master fails (or, when the old master is back as a
replica, its READONLY answer closes the connection), and the call is tried again on the
master the sentinels name; an old master that still runs (a manual failover) is left within
``_MASTER_CHECK`` of the sentinels naming another.

A connection belongs to the event loop it was opened on. Every pool here notices when it is
used from a new loop after the old one stopped (a module-level ``Queue`` shared by tests that
each run their own loop, or by successive ``asyncio.run`` calls): it closes the old loop's
sockets without that loop and opens new connections, instead of failing with "Event loop is
closed".
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar
from urllib.parse import unquote

import anyio
import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import AbstractBackoff

from queue_async.broker.errors import translate_errors
from queue_async.broker.sockets import prompt_writes
from queue_async.exceptions import BrokerConnectionError, ConfigurationError

T = TypeVar("T")

AnyRedis: TypeAlias = redis.asyncio.Redis | RedisCluster
"""A client of one server or of a cluster: what the layers above call."""

# The URL schemes of a cluster, and the scheme redis-py reads for each.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# The URL schemes of a service behind Redis Sentinel, and the scheme of its servers.
SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
_SENTINEL_PORT = 26379
_SENTINEL_URL_FORM = (
    "redis+sentinel://[user:password@]host:port[,host:port...]/<service_name>[/db] "
    "(rediss+sentinel:// for TLS), naming the sentinels and the master's service name as "
    "they know it (sentinel monitor <service_name> ...)"
)
# Connections a queue opens to each sentinel at most, to ask where the master is.
_SENTINEL_POOL = 4
# Seconds between two questions of a pool to the sentinels about where the master is, besides
# the one each new connection asks (see _SentinelPool).
_MASTER_CHECK = 0.5

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


def _cluster_retry() -> Retry:
    """As ``_retry``, and also while a cluster fails over or moves a slot (CLUSTERDOWN,
    TRYAGAIN, a slot no node serves yet); MOVED and ASK the cluster client follows itself."""
    return Retry(
        _Jitter(),
        _RETRIES,
        supported_errors=(
            redis.exceptions.ConnectionError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError,
            redis.exceptions.SlotNotCoveredError,  # type: ignore[arg-type] # retried as redis-py does
        ),
    )


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


class _SentinelPool(SentinelConnectionPool, _LoopBoundPool):
    """A waiting, loop-bound pool (``_LoopBoundPool``) of connections to the master that the
    sentinels name: each connection asks them when it connects (``SentinelConnectionPool``),
    and a READONLY answer (the master became a replica) closes it as a lost connection.

    redis-py's pool would keep using a connection to an old master that still runs (a manual
    failover, a partition) until the sentinels make it a replica, which they may do only
    seconds later, and every write it takes meanwhile is lost. So it also asks the sentinels
    again at most every ``_MASTER_CHECK`` seconds when a connection is taken, and closes a
    connection to a server they no longer name before it is used.
    """

    _next_check = 0.0

    async def ensure_connection(self, connection: Any) -> None:
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + _MASTER_CHECK
            with contextlib.suppress(redis.exceptions.ConnectionError):  # none now: connect says
                await self.get_master_address()  # type: ignore[no-untyped-call]
        address = (connection.host, connection.port)
        if connection.is_connected and self.master_address not in (None, address):
            await connection.disconnect()
        await super().ensure_connection(connection)


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


# The settings of a RedisCluster client that a new one takes over (everything its
# constructor accepts, less what each of our clients sets itself).
_OWN_CLUSTER_SETTINGS = frozenset(
    {"max_connections", "retry", "socket_timeout", "socket_connect_timeout", "event_dispatcher"}
)


_HOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar("qa_cluster_call", default=False)


class _CallLimit:
    """At most ``size`` calls of one cluster client at once, a caller past them waiting up to
    ``timeout`` for one to end: the waiting pool of a single server, which redis-py's
    cluster nodes lack (past their connections they fail at once). A call made inside one
    (a pipeline's own commands) does not count again."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self._free: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.asynccontextmanager
    async def held(self) -> Any:
        if _HOLDING.get():
            yield
            return
        loop = asyncio.get_running_loop()
        if self._free is None or self._loop is not loop:
            self._free, self._loop = asyncio.Semaphore(self.size), loop
        free = self._free
        try:
            await asyncio.wait_for(free.acquire(), self.timeout)
        except TimeoutError:
            raise redis.exceptions.ConnectionError("No connection available.") from None
        token = _HOLDING.set(True)
        try:
            yield
        finally:
            _HOLDING.reset(token)
            free.release()


@contextlib.contextmanager
def _torn_down_as_lost() -> Iterator[None]:
    """redis-py's cluster client (5.0.8, and 8.1 too) can find a node's connection torn
    down under it while a master fails over, and fail with an ``AttributeError`` on the
    connection's missing reader or writer: that is a lost connection, and is told as one, so
    that callers back off and try again instead of ending."""
    try:
        yield
    except AttributeError as exc:
        if "'NoneType' object has no attribute" not in str(exc):
            raise
        raise redis.exceptions.ConnectionError(
            f"the connection to a cluster node went away during the call ({exc})"
        ) from exc


class _ClusterClient(RedisCluster):
    """A cluster client whose calls wait for one another past ``max_connections`` (see
    ``_CallLimit``), and whose ``pubsub()`` subscribes on one node of the cluster.

    Scripts announce finished jobs with a classic PUBLISH, which a cluster passes to every
    node, so a subscriber may listen on any of them (the result waiters do; see
    producer/waiters.py). redis-py's cluster pub/sub would pick a node by the channel's slot
    from a slot map it has not read yet; this picks one of the known nodes at random, so a
    waiter that reconnects after losing a node tries another.
    """

    standalone: dict[str, Any]
    """Settings for a plain client of one node."""
    calls: _CallLimit

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.calls.held():
            with _torn_down_as_lost():
                return await super().execute_command(*args, **kwargs)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = super().pipeline(*args, **kwargs)
        execute = pipe.execute
        calls = self.calls

        async def limited(*a: Any, **k: Any) -> Any:
            async with calls.held():
                with _torn_down_as_lost():
                    return await execute(*a, **k)

        setattr(pipe, "execute", limited)  # noqa: B010 - mypy refuses a method assigned
        return pipe

    def pubsub(self, **kwargs: Any) -> Any:  # type: ignore[override]
        nodes = self.get_nodes() or list(self.nodes_manager.startup_nodes.values())
        node = random.choice(nodes)
        single = redis.asyncio.Redis(host=node.host, port=int(node.port), **self.standalone)
        return single.pubsub(**kwargs)


@dataclass(frozen=True, slots=True)
class _ClusterRecipe:
    """How to make another client of the same cluster: its startup nodes and settings."""

    nodes: tuple[tuple[str, int], ...]
    settings: dict[str, Any]
    socket_timeout: float | None
    """The source's own read timeout (a URL's ``?socket_timeout=``), if it set one."""

    @classmethod
    def of(cls, client: RedisCluster) -> _ClusterRecipe:
        if client.get_connection_kwargs().get("decode_responses"):
            raise ConfigurationError(
                "the RedisCluster client must be created with decode_responses=False: job "
                "payloads are bytes"
            )
        accepted = inspect.signature(RedisCluster.__init__).parameters
        kwargs = client.get_connection_kwargs()
        settings = {
            name: value
            for name, value in kwargs.items()
            if name in accepted and name not in _OWN_CLUSTER_SETTINGS
        }
        if kwargs.get("connection_class") is SSLConnection:
            settings["ssl"] = True
        known = client.get_nodes() or list(client.nodes_manager.startup_nodes.values())
        nodes = tuple(sorted({(node.host, int(node.port)) for node in known}))
        return cls(nodes, settings, kwargs.get("socket_timeout"))

    def client(
        self, limits: Limits, max_connections: int, socket_timeout: float | None
    ) -> RedisCluster:
        client = _ClusterClient(
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
            max_connections=max_connections,
            socket_connect_timeout=limits.connect_timeout,
            socket_timeout=socket_timeout,
            retry=_cluster_retry(),
            **self.settings,
        )
        client.calls = _CallLimit(max_connections, limits.pool_timeout)
        accepted = inspect.signature(redis.asyncio.Redis.__init__).parameters
        client.standalone = {
            "socket_connect_timeout": limits.connect_timeout,
            "socket_timeout": socket_timeout,
            **{name: value for name, value in self.settings.items() if name in accepted},
        }
        return client


def _cluster_url(url: str) -> RedisCluster:
    """A template client for a cluster URL (opens no connection)."""
    scheme, rest = url.split("://", 1)
    try:
        return RedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme]}://{rest}")
    except (ValueError, TypeError, redis.exceptions.RedisError) as exc:
        raise ConfigurationError(
            f"cannot use the cluster URL {_redact(url)!r}: {exc}. Use "
            "redis+cluster://host:port (rediss+cluster:// for TLS), naming any node of the "
            "cluster"
        ) from exc


@dataclass(frozen=True, slots=True)
class _SentinelRecipe:
    """How to reach the master of a service behind Redis Sentinel: the sentinels and how to
    talk to them, the service's name, and the settings of a connection to its master."""

    sentinels: tuple[tuple[str, int], ...]
    sentinel_class: type[Any]
    sentinel_settings: dict[str, Any]
    """Of a connection to a sentinel (TLS, credentials), without address and timeouts."""
    service: str
    connection_class: type[Any]
    settings: dict[str, Any]
    """Of a connection to the master (credentials, db, TLS...), without its address."""
    min_other_sentinels: int
    force_master_ip: str | None

    @classmethod
    def of(cls, client: redis.asyncio.Redis) -> _SentinelRecipe:
        """The recipe of a ``Sentinel(...).master_for(name)`` client (opens no connection)."""
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        if not pool.is_master:
            raise ConfigurationError(
                "the Sentinel client is for a replica (slave_for/replica_for): jobs are written "
                "on the master, so pass Sentinel(...).master_for(service_name)"
            )
        manager = pool.sentinel_manager
        if not manager.sentinels:
            raise ConfigurationError("the Sentinel client names no sentinels")
        first = manager.sentinels[0].connection_pool
        own = {"host", "port", "socket_timeout", "socket_connect_timeout", "retry"}
        addresses = [s.connection_pool.connection_kwargs for s in manager.sentinels]
        return cls(
            sentinels=tuple((str(a["host"]), int(a["port"])) for a in addresses),
            sentinel_class=first.connection_class,
            sentinel_settings={k: v for k, v in first.connection_kwargs.items() if k not in own},
            service=str(pool.service_name),
            connection_class=pool.connection_class,
            settings={
                k: v
                for k, v in pool.connection_kwargs.items()
                if k not in {"connection_pool", "host", "port"}
            },
            min_other_sentinels=int(manager.min_other_sentinels),
            force_master_ip=getattr(manager, "_force_master_ip", None),
        )

    def manager(self, limits: Limits) -> Sentinel:
        """A ``Sentinel`` of our own, whose clients of the sentinels are on waiting,
        loop-bound pools; a sentinel that does not answer is skipped, not retried."""
        extra = {} if self.force_master_ip is None else {"force_master_ip": self.force_master_ip}
        manager = Sentinel([], min_other_sentinels=self.min_other_sentinels, **extra)  # type: ignore[no-untyped-call]
        manager.sentinels = [
            redis.asyncio.Redis(
                connection_pool=_LoopBoundPool(
                    connection_class=self.sentinel_class,
                    max_connections=_SENTINEL_POOL,
                    timeout=limits.pool_timeout,
                    host=host,
                    port=port,
                    socket_connect_timeout=limits.connect_timeout,
                    socket_timeout=limits.command_timeout,
                    retry=Retry(_Jitter(), 0),
                    **self.sentinel_settings,
                )
            )
            for host, port in self.sentinels
        ]
        return manager


def _sentinel_url(url: str) -> redis.asyncio.Redis:
    """A template ``master_for`` client for a Sentinel URL (opens no connection)."""
    scheme, rest = url.split("://", 1)

    def bad(problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"cannot use the Sentinel URL {_redact(url)!r}: {problem}. Use {_SENTINEL_URL_FORM}"
        )

    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    addresses = [_sentinel_address(part, bad) for part in hosts.split(",")]
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise bad("it names no service (the master's name in the sentinels' configuration)")
    if db and not db.isdigit():
        raise bad(f"the database {db!r} after the service name is not a number")
    auth = f"{credentials}@" if credentials else ""
    template = f"{SENTINEL_SCHEMES[scheme]}://{auth}master/{db or 0}{'?' if query else ''}{query}"
    try:
        settings: dict[str, Any] = dict(parse_url(template))
    except ValueError as exc:
        raise bad(str(exc)) from exc
    settings.pop("host", None)
    settings.pop("port", None)
    tls = {k: v for k, v in settings.items() if k.startswith("ssl_")}
    if settings.pop("connection_class", None) is SSLConnection:
        settings["ssl"] = tls["ssl"] = True  # to the sentinels too
    sentinels = Sentinel(addresses, sentinel_kwargs=tls, **settings)  # type: ignore[no-untyped-call]
    return sentinels.master_for(unquote(service))  # type: ignore[no-any-return]


def _sentinel_address(part: str, bad: Callable[[str], ConfigurationError]) -> tuple[str, int]:
    """``host[:port]`` (``[ipv6]:port``) of one sentinel; the port is 26379 by default."""
    if part.startswith("["):
        host, _, port = part[1:].partition("]")
        port = port.removeprefix(":")
    elif ":" in part:
        host, _, port = part.rpartition(":")
    else:
        host, port = part, ""
    if not host:
        raise bad(f"{part!r} names no sentinel host")
    if not port:
        return host, _SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise bad(f"the sentinel {part!r} has no valid port (host:port, 1 to 65535)")
    return host, int(port)


class Connections:
    """The pools of one ``Queue``: the producers' client, and clients made for workers."""

    def __init__(self, source: str | AnyRedis, limits: Limits) -> None:
        self.limits = limits.check()
        self.cluster: _ClusterRecipe | None = None
        """How to make clients of the cluster, if the queue lives on one."""
        self.sentinel: _SentinelRecipe | None = None
        """How to reach the master behind Sentinel, if the queue lives behind one."""
        self._sentinels: Sentinel | None = None
        scheme = source.split("://", 1)[0] if isinstance(source, str) else None
        if scheme in CLUSTER_SCHEMES:
            assert isinstance(source, str)
            source = _cluster_url(source)
        elif scheme in SENTINEL_SCHEMES:
            assert isinstance(source, str)
            source = _sentinel_url(source)
        if isinstance(source, RedisCluster):
            self.cluster = _ClusterRecipe.of(source)
            self.client: AnyRedis = self.make_client(limits.max_connections).redis
            self.owns_client = True
            return
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
            pool.connection_class = prompt_writes(pool.connection_class)
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
                "Queue() takes a Redis URL or a redis.asyncio.Redis client (a RedisCluster, or "
                "a Sentinel(...).master_for(service_name) client), "
                f"not {type(source)!r}"
            )
        base = self.client.connection_pool
        self._connection_class = prompt_writes(base.connection_class)
        self._kwargs: dict[str, Any] = dict(base.connection_kwargs)
        if isinstance(base, SentinelConnectionPool):
            self.sentinel = _SentinelRecipe.of(self.client)
            self._sentinels = self.sentinel.manager(limits)
            self._connection_class = prompt_writes(self.sentinel.connection_class)
            self._kwargs = self.sentinel.settings
        if not self.owns_client:
            # The producers get a bounded, waiting pool of ours on the client's settings:
            # the user's own pool may fail past its size (redis-py 8: 100) instead of waiting.
            self.client = self.make_client(limits.max_connections).redis
            self.owns_client = True

    @property
    def server(self) -> tuple[Any, ...]:
        """What tells two queues' servers apart (workers wait on each server once)."""
        if self.cluster is not None:
            return ("cluster", self.cluster.nodes)
        k = self._kwargs
        if self.sentinel is not None:
            return ("sentinel", self.sentinel.sentinels, self.sentinel.service, k.get("db"))
        return (self._connection_class, k.get("host"), k.get("port"), k.get("path"), k.get("db"))

    def make_client(self, max_connections: int, *, blocking_reads: bool = False) -> Client:
        """A new client on the same server with a bounded pool of its own.

        ``blocking_reads``: no socket read timeout, for calls that block on the server (each
        caller bounds them with ``Client.blocking``).
        """
        if self.cluster is not None:
            timeout = None if blocking_reads else self.cluster.socket_timeout
            if not blocking_reads and timeout is None:
                timeout = self.limits.command_timeout
            return Client(self.cluster.client(self.limits, max_connections, timeout), self.limits)
        kwargs = {
            **self._kwargs,
            "socket_connect_timeout": self.limits.connect_timeout,
            "socket_timeout": None if blocking_reads else self._kwargs.get("socket_timeout"),
            "retry": _retry(),
        }
        if not blocking_reads and kwargs["socket_timeout"] is None:
            kwargs["socket_timeout"] = self.limits.command_timeout
        if self.sentinel is not None:
            kwargs["service_name"] = self.sentinel.service
            kwargs["sentinel_manager"] = self._sentinels
        pool = (_LoopBoundPool if self.sentinel is None else _SentinelPool)(
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
        if self._sentinels is not None:
            await asyncio.gather(*(close_client(s) for s in self._sentinels.sentinels))


class Client:
    """A client of ours and the limits it was made with."""

    def __init__(self, redis_: AnyRedis, limits: Limits) -> None:
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


async def close_client(client: AnyRedis) -> None:
    """Close a client made on a pool of ours, and the pool (``aclose`` leaves it open)."""
    await client.aclose()
    if isinstance(client, redis.asyncio.Redis):
        await client.connection_pool.disconnect()
        return
    # RedisCluster.aclose() closes nothing while the client means to read the slot map
    # again (after a lost connection), nor the nodes of an older map: close every node.
    manager = client.nodes_manager
    nodes = {id(n): n for n in [*manager.nodes_cache.values(), *manager.startup_nodes.values()]}
    await asyncio.gather(*(node.disconnect() for node in nodes.values()), return_exceptions=True)


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://***@{host}"
