"""``Queue``: the producer side (enqueue, handles, admin reads) and the task registry."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

import redis.asyncio

from queue_async.broker.broker import Broker, Outcome
from queue_async.broker.connections import Connections, Limits
from queue_async.broker.durability import Unconfirmed
from queue_async.broker.errors import translate_errors
from queue_async.broker.keys import QueueKeys
from queue_async.broker.records import job_from_fields
from queue_async.broker.stats import combined_stats, read_stats
from queue_async.broker.wire import as_text
from queue_async.codec import Codec, JsonCodec
from queue_async.context import JobContext
from queue_async.embedded import DurableServer, Fsync
from queue_async.exceptions import (
    BrokerError,
    ConfigurationError,
    JobNotFound,
    TaskNotRegistered,
)
from queue_async.identifiers import check_job_id, check_task_name
from queue_async.models import Job, JobStatus, QueueStats
from queue_async.options import Durability, TaskOptions
from queue_async.producer import batches
from queue_async.producer.coalesce import Coalescer
from queue_async.producer.cron import CronSchedule
from queue_async.producer.encode import encode_job
from queue_async.producer.handle import JobHandle
from queue_async.producer.shards import check_shards, shard_names, shard_of
from queue_async.producer.tasks import JobSpec, Task
from queue_async.producer.waiters import ResultWaiters

__all__ = ["Queue"]

logger = logging.getLogger("queue_async")

P = ParamSpec("P")
R = TypeVar("R")
Hook = Callable[[dict[str, Any]], Awaitable[None]]
"""``async def hook(state)``: a worker startup or shutdown hook."""
Middleware = Callable[[JobContext, Callable[[], Awaitable[Any]]], Awaitable[Any]]
EnqueueCall = Callable[[list["JobSpec[Any]"]], Awaitable[list["JobHandle[Any]"]]]
EnqueueMiddleware = Callable[[list["JobSpec[Any]"], EnqueueCall], Awaitable[list["JobHandle[Any]"]]]
"""``async def mw(specs, call_next)`` around every enqueue of this process (see
``Queue.enqueue_middleware``)."""
"""``async def mw(ctx, call_next)``: runs around every job; ``await call_next()`` runs it."""

DEFAULT_URL = "redis://localhost:6379/0"
# Concurrent result waits and job reads per round trip. A read's reply holds whole jobs
# (results and errors included), hence the smaller bound.
_WATCH_BATCH = 1000
_READ_BATCH = 100

# One coalesced enqueue: the job as given, its id, and the job packed for enqueue.lua.
_Enqueue = tuple["JobSpec[Any]", str, bytes]


def _packed_size(job: _Enqueue) -> int:
    return len(job[2])


# How long the record of a cancelled job stays readable.
_CANCELLED_KEEP_MS = 3_600_000


class TaskDecorator(Protocol):
    """What ``@queue.task(...)`` with options returns."""

    @overload
    def __call__(self, fn: Callable[Concatenate[JobContext, P], Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[JobContext, P], R], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


class Queue:
    """A named queue on a Redis/Valkey server.

    Args:
        redis: a URL (``redis://``, ``rediss://``, ``unix://``; ``redis+cluster://host:port``
            or ``rediss+cluster://`` for a Redis/Valkey Cluster, naming any of its nodes;
            ``redis+sentinel://host:port[,host:port...]/<service_name>[/db]`` or
            ``rediss+sentinel://`` for the master of a service behind Redis Sentinel), or a
            ``redis.asyncio.Redis`` client (also one from
            ``redis.asyncio.sentinel.Sentinel(...).master_for(service_name)``) or a
            ``redis.asyncio.RedisCluster`` client (created with ``decode_responses=False``).
            Default: ``$REDIS_URL``, else ``redis://localhost:6379/0``.
        name: the queue's name; every key of the queue is ``<prefix>:{<name>}:...``.
        prefix: the first part of every key.
        codec: how arguments and results become bytes (JSON by default).
        strict: if True, ``queue.enqueue("name", ...)`` refuses task names not registered here.
        max_payload_bytes: encoded arguments larger than this are refused at enqueue.
        max_connections: connections this queue's producers (enqueue, reads) open at most;
            a call beyond waits for a free one. Result waiters share one more connection,
            and each worker has its own few (see "Connections" in the README).
        pool_timeout: seconds a call waits for a free connection before it fails with
            ``BrokerConnectionError``.
        connect_timeout: seconds to open a connection before the attempt fails.
        command_timeout: seconds to wait for the answer to a call (blocking waits get their
            own bound); a URL's ``?socket_timeout=`` overrides it for the producers.
        allow_eviction: run on a server whose ``maxmemory-policy`` may evict keys (anything
            but ``noeviction``), knowing that an evicted key is lost jobs. Without it, the
            first enqueue and every worker start refuse such a server.
        durability: make every enqueue, and every completion and failure a worker records,
            wait until ``Durability.replicas`` replicas hold it (``WAIT``, in the same round
            trip), so that a failover does not lose it. An enqueue that got fewer
            confirmations raises ``NotReplicated`` (its jobs are enqueued); a worker logs a
            warning and goes on. The first enqueue refuses a master with fewer connected
            replicas (``BrokerError``), and a worker waits for them. Default None: no waiting
            (asynchronous replication).
            See "Durability" in the README.
        shards: spread the queue over this many queues of its own (``<name>.<k>``), each
            one hash slot, so that on a Redis Cluster several masters serve it (see
            "Sharded queues" in the README). A job's shard follows from its id; workers
            serve every shard. Fixed for the life of the queue's jobs.
    """

    def __init__(
        self,
        redis_: str | redis.asyncio.Redis | redis.asyncio.RedisCluster | None = None,
        *,
        name: str = "default",
        prefix: str = "qa",
        codec: Codec | None = None,
        strict: bool = False,
        max_payload_bytes: int = 512 * 1024,
        max_connections: int = 20,
        pool_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        allow_eviction: bool = False,
        durability: Durability | None = None,
        shards: int = 1,
    ) -> None:
        self.name = name
        self.prefix = prefix
        if redis_ is None:
            redis_ = os.environ.get("REDIS_URL") or DEFAULT_URL
        limits = Limits(max_connections, pool_timeout, connect_timeout, command_timeout)
        names = shard_names(name, check_shards(shards))
        self.durability = _checked_durability(durability, command_timeout)
        connections = Connections(redis_, limits)
        self.allow_eviction = allow_eviction
        if codec is not None and not isinstance(codec, Codec):
            raise ConfigurationError(f"codec {codec!r} has no encode/decode methods")
        if max_payload_bytes < 1:
            raise ConfigurationError(f"max_payload_bytes must be positive, got {max_payload_bytes}")
        self.codec: Codec = codec or JsonCodec()
        self.strict = strict
        self.max_payload_bytes = max_payload_bytes
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._startup_hooks: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []
        self._middlewares: list[Middleware] = []
        self._enqueue_middlewares: list[EnqueueMiddleware] = []
        self._crons: dict[str, CronSchedule] = {}
        self._bind(Broker(connections, prefix=prefix, name=name, durability=self.durability))
        self._shards: tuple[Queue, ...] = (self,)
        self._owner = self
        if len(names) > 1:
            self._shards = tuple(self._shard(n, connections) for n in names)
            # One subscription for the result waits of every shard.
            channels = [shard._broker.keys.ended_channel for shard in self._shards]
            self._waiters = ResultWaiters(connections, channels)
            for shard in self._shards:
                shard._waiters = self._waiters

    def _bind(self, broker: Broker) -> None:
        """Take ``broker``'s server and keys: the connections and batching of one queue."""
        self._broker = broker
        # A RedisCluster on a cluster. Still declared as Redis until dashboard/audit.py takes
        # either (AnyRedis): the calls users make on it (pipelines, reads) exist on both.
        self.client: redis.asyncio.Redis = cast("redis.asyncio.Redis", broker.client)
        """The producers' client (on a pool of the queue's own, also when a client was passed
        in): for your own pipelines (see ``enqueue_many``)."""
        self._waiters = ResultWaiters(broker.connections, broker.keys.ended_channel)
        self._server_checked = False
        self._server_check_lock = asyncio.Lock()
        # Concurrent single calls of the process share round trips (see coalesce.py).
        scripts = broker.scripts
        self._enqueues: Coalescer[_Enqueue, JobHandle[Any]] = Coalescer(
            self._send_enqueues,
            max_items=batches.CHUNK,
            max_size=batches.CHUNK_BYTES,
            size=_packed_size,
        )
        self._watches = Coalescer(scripts.watch_many, max_items=_WATCH_BATCH)
        self._reads = Coalescer(broker.jobs_fields, max_items=_READ_BATCH)
        self._outcomes = Coalescer(broker.outcomes, max_items=_READ_BATCH)
        # Views made once: the worker reads ``tasks`` for every job it runs.
        self._tasks_view = MappingProxyType(self._tasks)
        self._crons_view = MappingProxyType(self._crons)

    def _shard(self, name: str, connections: Connections) -> Queue:
        """One shard of this queue: a queue of its own keys on the same connections, with
        this queue's tasks, crons, hooks and middleware (the same objects, so that what is
        registered later counts too). A cron tick goes to the shard of its job's id."""
        shard = object.__new__(Queue)
        shard.name = name
        for attribute in _SHARED_WITH_SHARDS:
            setattr(shard, attribute, getattr(self, attribute))
        shard._bind(Broker(connections, prefix=self.prefix, name=name, durability=self.durability))
        shard._shards = (shard,)
        shard._owner = self
        return shard

    def __repr__(self) -> str:
        if len(self._shards) > 1:
            return f"<Queue {self.name!r} in {len(self._shards)} shards>"
        return f"<Queue {self.name!r} keys {self._broker.keys.prefix}*>"

    @property
    def shards(self) -> tuple[Queue, ...]:
        """The queues that hold this queue's jobs, one per hash slot: the queue itself, or its
        shards (``Queue(shards=N)``), which a worker of this queue serves alike."""
        return self._shards

    @property
    def sharded_as(self) -> Queue:
        """The sharded queue this queue is a shard of; the queue itself if it is none."""
        return self._owner

    def shard_for(self, job_id: str) -> Queue:
        """The shard that holds (or would hold) the job of this id (this queue itself if it
        has one shard)."""
        shards = self._shards
        return shards[0] if len(shards) == 1 else shards[shard_of(job_id, len(shards))]

    @classmethod
    def embedded(
        cls, data: str | os.PathLike[str], *, fsync: Fsync = "everysec", **options: Any
    ) -> Queue:
        """A queue on the durable server of one machine whose data lives in ``data``.

        Starts that server (the Valkey of the ``queue-async[embedded]`` extra, with an
        append-only file in the folder, on a Unix socket there) if none runs for the folder,
        else attaches to it: every process of the machine naming the same folder shares one
        server, which outlives them and reloads the folder after a restart (see
        ``queue_async.embedded.DurableServer``; ``queue-async server --data`` runs it in the
        foreground). ``fsync="always"`` puts every acknowledged write on disk before the
        answer; ``"everysec"`` may lose the last second in a crash. ``options`` go to
        ``Queue`` (``name=``, ``prefix=``...).
        """
        server = DurableServer(data, fsync=fsync)
        server.start()
        return cls(server.url, **options)

    @property
    def key_prefix(self) -> str:
        """``<prefix>:{<name>}:``, the start of every key of this queue."""
        return self._broker.keys.prefix

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """The registered tasks by name (read-only: register with ``@queue.task``)."""
        return self._tasks_view

    @property
    def crons(self) -> Mapping[str, CronSchedule]:
        """The cron schedules by name (read-only: add with ``queue.cron``)."""
        return self._crons_view

    @property
    def startup_hooks(self) -> tuple[Hook, ...]:
        return tuple(self._startup_hooks)

    @property
    def shutdown_hooks(self) -> tuple[Hook, ...]:
        return tuple(self._shutdown_hooks)

    @property
    def middlewares(self) -> tuple[Middleware, ...]:
        return tuple(self._middlewares)

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections this queue opened (a client passed in is left open)."""
        await self._waiters.aclose()  # the shards' too: they share it
        await self._broker.aclose()

    # -- registration ---------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[Concatenate[JobContext, P], Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[Concatenate[JobContext, P], R], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        retries: int = 3,
        timeout: float | timedelta | None = 300,
        backoff_base: float | timedelta = 1,
        backoff_cap: float | timedelta = 600,
        keep_result: float | timedelta = 3600,
        priority: int = 0,
        fatal: Iterable[type[BaseException]] = (),
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        concurrency_key: Callable[..., Any] | None = None,
        concurrency_limit: int = 1,
    ) -> TaskDecorator: ...
    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        **options: Any,
    ) -> Any:
        """Register a handler as a task of this queue: ``@queue.task`` or ``@queue.task(...)``.

        The handler may be ``async def`` or plain ``def`` (run in a worker thread). If its
        first parameter is annotated ``JobContext`` it receives the job's context there.

        Args:
            name: the task's name in Redis; default ``module.qualname`` of the handler.
            retries: tries after the first before the job goes to dead.
            timeout: seconds (or timedelta) a try may run before it is cancelled; None: no limit.
            backoff_base: the first retry waits a random time up to this; each later one up to
                twice as long as the one before...
            backoff_cap: ...but never more than this.
            keep_result: how long a finished job and its result stay readable; 0 keeps none.
            priority: default priority of the task's jobs; lower runs first.
            fatal: exception types that fail a job at once, skipping remaining tries.
            max_concurrency: at most this many of the task's jobs run at once, across all
                workers; the others wait without blocking other tasks' jobs.
            rate_limit: at most this many jobs start per period across all workers, e.g.
                ``"100/s"``, ``"10/min"``; excess jobs wait, they do not fail.
            concurrency_key: called with each job's arguments at enqueue; at most
                ``concurrency_limit`` running jobs share the key it returns.
            concurrency_limit: see ``concurrency_key`` (1 by default).
        """
        if "fatal" in options:
            options["fatal"] = tuple(options["fatal"])
        task_options = TaskOptions.model_validate(options)

        def decorate(handler: Callable[..., Any]) -> Task[Any, Any]:
            return self._register(handler, name, task_options)

        return decorate if fn is None else decorate(fn)

    def _register(
        self, fn: Callable[..., Any], name: str | None, options: TaskOptions
    ) -> Task[Any, Any]:
        task_name = check_task_name(f"{fn.__module__}.{fn.__qualname__}" if name is None else name)
        if task_name in self._tasks and self._tasks[task_name].fn is not fn:
            raise ConfigurationError(f"task name {task_name!r} is already registered on {self!r}")
        task: Task[Any, Any] = Task(self, fn, task_name, options)
        self._tasks[task_name] = task
        return task

    def on_startup(self, hook: Hook) -> Hook:
        """Register ``async def hook(state)`` to run when a worker starts (fill ``state``)."""
        self._startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Register ``async def hook(state)`` to run when a worker stops."""
        self._shutdown_hooks.append(hook)
        return hook

    def enqueue_middleware(self, middleware: EnqueueMiddleware) -> EnqueueMiddleware:
        """Register ``async def mw(specs, call_next)`` around every enqueue of this process
        (``task.enqueue``, ``enqueue``, ``enqueue_many``): ``specs`` are the jobs of the call,
        ``await call_next(specs)`` enqueues them (possibly changed, e.g. with headers added:
        tracing) and returns their handles. The first registered is the outermost."""
        self._enqueue_middlewares.append(middleware)
        return middleware

    def middleware(self, middleware: Middleware) -> Middleware:
        """Register ``async def mw(ctx, call_next)`` around every job a worker runs.

        ``await call_next()`` runs the rest of the chain and the handler and returns its
        result; a middleware may wrap it (logging, metrics, tracing, tenant context), change
        the result, or raise (the try then fails like a handler error). The first registered
        is the outermost.
        """
        if not callable(middleware):
            raise ConfigurationError(f"middleware {middleware!r} is not callable")
        self._middlewares.append(middleware)
        return middleware

    def cron(
        self,
        spec: str,
        task: Task[Any, Any] | None = None,
        /,
        *,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        timezone: str = "UTC",
        name: str | None = None,
        run_missed: bool = False,
    ) -> Any:
        """Enqueue ``task`` at every tick of a cron ``spec``, once however many workers run.

        ``spec`` has 5 fields (minute hour day month weekday) or 6 with seconds first
        (``"*/10 * * * * *"``: every 10 seconds), read in ``timezone``. Workers fire the ticks;
        a tick missed while no worker ran is skipped, unless ``run_missed`` (then the last
        missed one runs when a worker starts). Without ``task``, it is a decorator for a
        handler (registered as a task) or a task. Invalid specs raise ``ConfigurationError``.
        """

        def register(target: Any) -> Any:
            chosen = target if isinstance(target, Task) else self.task(target)
            schedule = CronSchedule.build(
                spec,
                chosen,
                args=tuple(args),
                kwargs=dict(kwargs or {}),
                timezone=timezone,
                name=name,
                run_missed=run_missed,
            )
            if schedule.name in self._crons:
                raise ConfigurationError(
                    f"a cron named {schedule.name!r} is already registered on {self!r}; "
                    "pass name= to tell them apart"
                )
            encode_job(
                self.codec, self.max_payload_bytes, chosen.call(*schedule.args, **schedule.kwargs)
            )
            self._crons[schedule.name] = schedule
            return target

        if task is None:
            return register
        if not isinstance(task, Task):
            raise ConfigurationError(f"queue.cron() takes a Task, not {type(task).__name__}")
        register(task)
        return task

    # -- enqueue --------------------------------------------------------------------------

    def call(self, task: str, /, *args: Any, **kwargs: Any) -> JobSpec[Any]:
        """A job of the task named ``task``, for ``enqueue_many`` (by name, no import needed)."""
        known = self._tasks.get(check_task_name(task))
        if known is None and self.strict:
            raise TaskNotRegistered(
                f"task {task!r} is not registered on {self!r} (strict=True); registered: "
                f"{sorted(self._tasks) or 'none'}"
            )
        return JobSpec(task, args, kwargs, None, known.task_options if known else None)

    async def enqueue(self, task: str, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Enqueue a job of the task named ``task``: for producers that do not import handlers."""
        return await self._enqueue_now(self.call(task, *args, **kwargs))

    async def enqueue_spec(
        self, spec: JobSpec[R], *, pipeline: redis.asyncio.client.Pipeline | None = None
    ) -> JobHandle[R]:
        """Enqueue one prepared job (``task.call(...)``); see ``enqueue_many`` for ``pipeline``.

        Concurrent calls in one process (from any task) travel together: a call goes out at
        once when none is in flight, and those that come meanwhile go out as one script call
        right after it. Each gets its own handle and outcome; a call inside ``pipeline`` is
        not combined with others.
        """
        if self._owner is not self:  # a shard: its jobs go where their ids say
            return await self._owner.enqueue_spec(spec, pipeline=pipeline)
        if pipeline is not None or self._enqueue_middlewares:
            handles = await self.enqueue_many([spec], pipeline=pipeline)
            return handles[0]
        return await self._enqueue_coalesced(spec)

    async def _enqueue_coalesced(self, spec: JobSpec[R]) -> JobHandle[R]:
        await self._check_server_once()
        return await self._submit(spec)

    def _enqueue_now(self, spec: JobSpec[R]) -> Awaitable[JobHandle[R]]:
        """``enqueue_spec(spec)``, encoded at once: an encoding error raises here.

        Once the server is checked, on a queue without enqueue middleware, what it returns
        is the future of the coalesced call itself: the path of every ``task.enqueue``
        spends no coroutine of its own between the caller and the reply.
        """
        if self._server_checked and self._owner is self and not self._enqueue_middlewares:
            return self._submit(spec)
        return self.enqueue_spec(spec)

    def _submit(self, spec: JobSpec[R]) -> asyncio.Future[JobHandle[R]]:
        job_id, packed = encode_job(self.codec, self.max_payload_bytes, spec, len(self._shards))
        shard = self.shard_for(job_id)
        return cast("asyncio.Future[JobHandle[R]]", shard._enqueues.submit((spec, job_id, packed)))

    async def _send_enqueues(self, jobs: list[_Enqueue]) -> list[JobHandle[Any] | Exception]:
        """The coalesced enqueues of concurrent callers: one script call, one handle per job;
        with durability, a shortfall goes to each caller as its own job's error."""
        # A process that awaits results has its new jobs flagged as awaited by this call
        # (see producer/waiters.py): their result() needs no watch call. Only jobs of ids
        # made here: an id the caller gives may be enqueued again (replace), and an end heard
        # of it could be an earlier job's.
        made = [spec.options is None or not spec.options.job_id for spec, _, _ in jobs]
        ids = [job_id for (_, job_id, _), ours in zip(jobs, made, strict=True) if ours]
        flagged = self._waiters.flag(ids)
        try:
            try:
                replies = cast(
                    "list[int | bytes | Unconfirmed]",
                    await self._broker.scripts.enqueue(
                        b"".join(packed for _, _, packed in jobs), watched=flagged
                    ),
                )
            except Unconfirmed as short:
                replies = cast("list[int | bytes | Unconfirmed]", short.per_item())
        except BaseException:
            if flagged:
                self._waiters.unflag(ids)
            raise
        owner = self._owner
        handles: list[JobHandle[Any] | Exception] = []
        not_added = []
        for (spec, job_id, _), reply, ours in zip(jobs, replies, made, strict=True):
            if isinstance(reply, Unconfirmed):
                handles.append(batches.not_replicated(owner, [spec], [job_id], [], reply))
            else:
                handle = owner._handle(job_id, reply)
                handle._flagged = flagged and ours and reply == 1
                handles.append(handle)
            if flagged and ours and reply != 1:
                not_added.append(job_id)
        if not_added:
            self._waiters.unflag(not_added)
        return handles

    async def enqueue_many(
        self,
        specs: Iterable[JobSpec[Any]],
        *,
        pipeline: redis.asyncio.client.Pipeline | None = None,
    ) -> list[JobHandle[Any]]:
        """Enqueue many jobs in one round trip; up to 5,000 jobs (and 8 MiB) all or none.

        Every job is encoded before anything is sent: one that cannot be encoded raises
        ``EncodeError`` and nothing is written. A job whose id exists, or whose unique key is
        held, is not added: its handle is the existing job's.

        A larger batch goes as several transactions, one after the other, so that the server
        never stops for long for other clients; each is all or none, and ids are fixed
        before the first is sent. If one fails after another committed, the call raises
        ``EnqueueIncomplete``, which says which jobs landed and holds the rest as specs that
        can be enqueued again without duplicates.

        With ``pipeline`` (a redis.asyncio pipeline of the same server, usually a
        transaction), the jobs are only added to it, and land or not with the rest of it
        when you execute it. The handles then name the ids sent: a unique job that was
        deduplicated shows in the pipeline's result, not in its handle.
        """
        if self._owner is not self:  # a shard: its jobs go where their ids say
            return await self._owner.enqueue_many(specs, pipeline=pipeline)
        specs = list(specs)
        if self._enqueue_middlewares:
            return await self._through_middleware(specs, pipeline)
        return await self._enqueue_all(specs, pipeline)

    def _through_middleware(
        self, specs: list[JobSpec[Any]], pipeline: redis.asyncio.client.Pipeline | None
    ) -> Awaitable[list[JobHandle[Any]]]:
        async def last(specs: list[JobSpec[Any]]) -> list[JobHandle[Any]]:
            if len(specs) == 1 and pipeline is None:
                return [await self._enqueue_coalesced(specs[0])]  # with other callers
            return await self._enqueue_all(specs, pipeline)

        call: EnqueueCall = last
        for middleware in reversed(self._enqueue_middlewares):
            call = _wrapped(middleware, call)
        return call(specs)

    async def _enqueue_all(
        self, specs: list[JobSpec[Any]], pipeline: redis.asyncio.client.Pipeline | None
    ) -> list[JobHandle[Any]]:
        codec, limit, count = self.codec, self.max_payload_bytes, len(self._shards)
        encoded = [encode_job(codec, limit, spec, count) for spec in specs]
        if pipeline is not None:
            return await self._enqueue_into(pipeline, encoded)
        if not encoded:
            return []
        # Grouped by shard (a transaction never spans two slots), each group cut into
        # transactions; with one shard, in the order given.
        order, sent = batches.by_shard([shard._broker.scripts for shard in self._shards], encoded)
        if count > 1:
            specs = [specs[i] for i in order]
            encoded = [encoded[i] for i in order]
        ids = [job_id for job_id, _ in encoded]
        await self._check_server_once()
        handles = self._handles(ids, await batches.send(self, specs, ids, sent))
        if count == 1:
            return handles
        in_order: list[JobHandle[Any]] = [handles[0]] * len(handles)
        for at, i in enumerate(order):
            in_order[i] = handles[at]
        return in_order

    async def _enqueue_into(
        self, pipeline: redis.asyncio.client.Pipeline, encoded: list[tuple[str, bytes]]
    ) -> list[JobHandle[Any]]:
        """The jobs added to the caller's pipeline, to land with the rest of it."""
        if len(self._shards) > 1:
            raise ConfigurationError(
                f"{self!r} spreads its jobs over {len(self._shards)} hash slots: a pipeline "
                "(one transaction, one slot) cannot hold them; enqueue without pipeline="
            )
        await self._check_server_once()
        for _, chunk in batches.chunks([job for _, job in encoded]):
            self._broker.scripts.enqueue_into(pipeline, chunk)
        return [JobHandle(self, job_id) for job_id, _ in encoded]

    async def _check_server_once(self) -> None:
        """``check_server`` before the first enqueue: one check for all the first callers,
        who go on in the order they came (the lock's)."""
        if not self._server_checked:
            async with self._server_check_lock:
                if not self._server_checked:
                    await self.check_server()

    def _handle(self, job_id: str, reply: int | bytes) -> JobHandle[Any]:
        """The handle for enqueue.lua's reply: the job's own id, or the id of the job that
        holds its unique key (a tuple of types: ``bytes | str`` would build a union per job)."""
        if isinstance(reply, _TEXT):
            return JobHandle(self, as_text(reply), existing=True)
        return JobHandle(self, job_id, existing=reply == 0)

    def _handles(self, ids: list[str], replies: list[int | bytes]) -> list[JobHandle[Any]]:
        return [self._handle(job_id, reply) for job_id, reply in zip(ids, replies, strict=False)]

    # -- reading and admin ----------------------------------------------------------------

    def job(self, job_id: str) -> JobHandle[Any]:
        """A handle to an existing job by id.

        Raises ``JobNotFound`` for a string that cannot be a job id (e.g. one taken from a
        request's URL): no job has it.
        """
        try:
            return JobHandle(self, check_job_id(job_id))
        except ConfigurationError as exc:
            raise JobNotFound(f"there is no job {job_id!r}: {exc}", job_id=str(job_id)) from None

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not started. True if this call cancelled it."""
        if not _is_job_id(job_id):
            return False
        scripts = self.shard_for(job_id)._broker.scripts
        state = await scripts.cancel(job_id, _CANCELLED_KEEP_MS)
        return state in ("ready", "scheduled")

    async def abort(self, job_id: str) -> bool:
        """Cancel a job that has not started, or stop a running one (see ``JobHandle.abort``).

        True if this call cancelled the job or flagged it for abort."""
        if not _is_job_id(job_id):
            return False
        scripts = self.shard_for(job_id)._broker.scripts
        state = await scripts.cancel(job_id, _CANCELLED_KEEP_MS, abort=True)
        return state in ("ready", "scheduled", "active")

    async def read_job(self, job_id: str) -> Job | None:
        """The job as a ``Job`` model, or None if it does not exist."""
        shard = self.shard_for(job_id)
        fields = await shard._reads.call(job_id)
        if fields is None:
            return None
        return job_from_fields(job_id, shard.name, self.codec, fields)

    async def read_outcome(self, job_id: str) -> Outcome | None:
        """How the job ended (or stands): state, task, stored result and error; None if it
        does not exist. Lighter than ``read_job``: what ``result()`` needs."""
        return await self.shard_for(job_id)._outcomes.call(job_id)

    async def job_status(self, job_id: str) -> JobStatus | None:
        """The job's status alone (one cheap read), or None if it does not exist."""
        return await self.shard_for(job_id)._broker.job_status(job_id)

    def wait_finished(
        self, job_id: str, timeout: float | None, *, flagged: bool = False
    ) -> Awaitable[tuple[bool, Outcome | None]]:
        """Wait until the job is in a final state (True, and its outcome when the
        announcement carried it) or gone (False, None); ``JobTimeout`` if ``timeout`` seconds
        pass first (see ``JobHandle.result``; ``flagged``: see ``ResultWaiters``). The
        waiters' own coroutine: one frame less on the path of every ``result()``."""
        shard = self.shard_for(job_id)
        return shard._waiters.wait_finished(shard._watches.call, job_id, timeout, flagged=flagged)

    async def stats(self) -> QueueStats:
        """Counts per state, latency and lifetime counters, as of one moment (one script:
        see ``QueueStats``)."""
        if len(self._shards) == 1:
            return await read_stats(self._broker.scripts, self.name)
        parts = await asyncio.gather(*(read_stats(s._broker.scripts, s.name) for s in self._shards))
        return combined_stats(self.name, list(parts))

    async def pause(self, task: str | Task[Any, Any] | None = None) -> None:
        """Stop workers everywhere from starting this queue's jobs (or one task's).

        Enqueueing still works and running jobs finish; ``resume`` lets the rest go.
        """
        gated = self._gated_task(task)
        for shard in self._shards:
            await shard._broker.scripts.pause(gated)

    async def resume(self, task: str | Task[Any, Any] | None = None) -> None:
        """Undo ``pause`` for the queue (or the task); held jobs go back in their order."""
        gated = self._gated_task(task)
        for shard in self._shards:
            await shard._broker.scripts.resume(gated)

    @staticmethod
    def _gated_task(task: str | Task[Any, Any] | None) -> str:
        if task is None:
            return ""
        return check_task_name(task.name if isinstance(task, Task) else task)

    async def check_server(self) -> None:
        """Refuse a server that may evict this queue's keys (see ``allow_eviction``).

        Also adds the queue to the server's registry of queues (see ``Admin.queues``).
        Called by the first enqueue and at every worker start. A server that does not let
        us read its settings (CONFIG denied, as on some managed services) is let through with
        a warning.
        """
        if not self.allow_eviction:
            await self._broker.check_eviction_policy()
        if self.durability is not None:
            await self._broker.check_replicas(self.durability)
        # The registry of queues (``Admin.queues``): outside the queue's hash slot, so no
        # script may write it. Once per Queue (the first enqueue) and per worker start; best
        # effort, so that an enqueue fails (if it does) with its own error, not this one's.
        try:
            with translate_errors("registering the queue"):
                names = [shard.name for shard in self._shards]
                await self.client.sadd(QueueKeys.registry(self.prefix), *names)
        except BrokerError as exc:
            logger.warning("could not add %r to the registry of queues: %s", self.name, exc)
        for shard in self._shards:
            shard._server_checked = True
        self._server_checked = True

    async def ping(self) -> None:
        """Raise ``BrokerConnectionError`` if the server cannot be reached."""
        await self._broker.ping()


_TEXT = (bytes, str)
_SHARED_WITH_SHARDS = (
    "prefix",
    "allow_eviction",
    "codec",
    "strict",
    "max_payload_bytes",
    "durability",
    "_tasks",
    "_startup_hooks",
    "_shutdown_hooks",
    "_middlewares",
    "_enqueue_middlewares",
    "_crons",
)


def _checked_durability(durability: Durability | None, command_timeout: float) -> Durability | None:
    if durability is not None and not isinstance(durability, Durability):
        raise ConfigurationError(
            f"durability takes a queue_async.Durability or None, not {durability!r}"
        )
    if durability is not None and durability.seconds >= command_timeout:
        raise ConfigurationError(
            f"Durability(timeout={durability.seconds:g}) must be shorter than "
            f"command_timeout ({command_timeout:g} s): the wait for replicas is part of a call"
        )
    return durability


def _wrapped(middleware: EnqueueMiddleware, call_next: EnqueueCall) -> EnqueueCall:
    async def call(specs: list[JobSpec[Any]]) -> list[JobHandle[Any]]:
        return await middleware(specs, call_next)

    return call


def _is_job_id(job_id: str) -> bool:
    try:
        check_job_id(job_id)
    except ConfigurationError:
        return False
    return True
