"""``Broker``: one queue's view of its server, for everything above the broker layer.

It owns the queue's connections, its key names and its script calls, and is the one reader
of a job's stored record, in either of its two forms (see ``records``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from queue_async.broker.connections import AnyRedis, Connections
from queue_async.broker.errors import translate_errors
from queue_async.broker.keys import QueueKeys
from queue_async.broker.records import job_fields_of
from queue_async.broker.scripts import Scripts
from queue_async.broker.wire import as_bytes, as_text, fresh_job_fields
from queue_async.exceptions import BrokerError, ConfigurationError
from queue_async.models import JobStatus
from queue_async.options import Durability

__all__ = ["Broker", "Outcome"]

_OUTCOME_FIELDS = "state task result error"


class Outcome(NamedTuple):
    """What a result wait reads of a finished job: no more than it needs."""

    state: str
    task: str
    result: bytes | None
    error: bytes | None


logger = logging.getLogger("queue_async")


class Broker:
    """Connections, key names and script calls of one queue."""

    def __init__(
        self,
        connections: Connections,
        *,
        prefix: str,
        name: str,
        durability: Durability | None = None,
    ) -> None:
        self.keys = QueueKeys.for_queue(prefix, name)
        self.connections = connections
        """Shared by the shards of a sharded queue: one set of pools for all of them."""
        self.client: AnyRedis = connections.client
        self.scripts = Scripts(self.client, self.keys, durability)

    async def aclose(self) -> None:
        await self.connections.aclose()

    async def job_fields(self, job_id: str) -> dict[str, bytes] | None:
        """The job's stored fields as job hash fields (a fresh record is read as the fields it
        stands for); None if there is no such job."""
        return (await self.jobs_fields([job_id]))[0]

    async def jobs_fields(self, job_ids: list[str]) -> list[dict[str, bytes] | None]:
        """``job_fields`` of many jobs in one round trip."""
        return [job_fields_of(job) for job in await self.scripts.read(job_ids, "")]

    async def outcomes(self, job_ids: list[str]) -> list[Outcome | None]:
        """How each job ended (or stands), in one round trip: its state, task, stored
        result and error; None if there is no such job."""
        outcomes: list[Outcome | None] = []
        for job in await self.scripts.read(job_ids, _OUTCOME_FIELDS):
            if isinstance(job, list) and job[0] is not None:
                state, task, result, error = job
                outcomes.append(Outcome(as_text(state), as_text(task or b""), result, error))
            elif job is not None and not isinstance(job, list):  # still a fresh record
                fields = fresh_job_fields(as_bytes(job))
                outcomes.append(Outcome("ready", as_text(fields["task"]), None, None))
            else:
                outcomes.append(None)
        return outcomes

    async def job_status(self, job_id: str) -> JobStatus | None:
        """The job's state alone, or None if there is no such job."""
        with translate_errors("reading a job's state"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hexists(self.keys.fresh, job_id)
                pipe.hget(self.keys.job(job_id), "state")
                fresh, raw = await pipe.execute()
        if fresh:
            return JobStatus.READY
        if raw is None:
            return None
        return JobStatus(as_text(raw))

    async def check_eviction_policy(self) -> None:
        """Refuse a server whose ``maxmemory-policy`` may evict keys (see
        ``Queue(allow_eviction=...)``). A server that does not let us read its settings
        (CONFIG denied, as on some managed services) is let through with a warning. On a
        cluster, every master is asked: the queue may live on any of them."""
        with translate_errors("reading the server's eviction policy"):
            try:
                if isinstance(self.client, RedisCluster):
                    await self.client.initialize()
                    replies = [
                        await self.client.config_get("maxmemory-policy", target_nodes=master)
                        for master in self.client.get_primaries()
                    ]
                else:
                    replies = [await self.client.config_get("maxmemory-policy")]
            except redis.exceptions.ResponseError as exc:
                logger.warning(
                    "cannot read the server's maxmemory-policy (%s): make sure it is "
                    "noeviction, or an evicted key loses jobs",
                    exc,
                )
                return
        for reply in replies:
            self._refuse_eviction(reply)

    @staticmethod
    def _refuse_eviction(reply: Mapping[Any, Any]) -> None:
        values = {as_text(k or b""): as_text(v or b"") for k, v in reply.items()}
        policy = values.get("maxmemory-policy") or "noeviction"
        if policy != "noeviction":
            raise ConfigurationError(
                f"the Redis server's maxmemory-policy is {policy!r}: under memory pressure it "
                "may evict this queue's keys, and with them queued jobs. Set it to "
                "noeviction (CONFIG SET maxmemory-policy noeviction, and in its config file), "
                "or pass Queue(allow_eviction=True) to accept that risk"
            )

    async def check_replicas(self, durability: Durability) -> None:
        """Refuse a server that cannot give what ``durability`` asks for: a replica, or (with
        ``local_fsync``) a master without an append-only file (``ConfigurationError``); or,
        for now, a master with fewer connected replicas than asked (``BrokerError``). On a
        cluster, every master is asked."""
        with translate_errors("reading the server's replication settings"):
            if isinstance(self.client, RedisCluster):
                await self.client.initialize()
                replies = [
                    await self.client.info(target_nodes=master)
                    for master in self.client.get_primaries()
                ]
            else:
                replies = [await self.client.info()]
        for info in replies:
            where = f"the server at {info.get('tcp_port', '?')}"
            if info.get("role") != "master":
                raise ConfigurationError(
                    f"{where} is a replica, and Queue(durability=...) waits for the replicas "
                    "of a master: point the URL at the master"
                )
            if durability.local_fsync and not int(info.get("aof_enabled", 0)):
                raise ConfigurationError(
                    f"{where} has no append-only file (appendonly no), and "
                    "Durability(local_fsync=True) waits for it (WAITAOF): turn appendonly on, "
                    "or pass local_fsync=False"
                )
            connected = int(info.get("connected_slaves", 0))
            if connected < durability.replicas:
                # A state, not a setting: a replica may be restarting, or a failover may have
                # left the new master alone for a while. So a BrokerError, that a worker
                # backs off from and tries again, and the next enqueue checks again.
                raise BrokerError(
                    f"{where} has {connected} connected replicas, and Queue(durability=...) "
                    f"asks {durability.replicas} to confirm every write, so every write would "
                    "wait out its timeout: add replicas (replicaof) or wait for them to be back, "
                    "lower Durability(replicas=...), or pass durability=None"
                )

    async def ping(self) -> None:
        with translate_errors("pinging the server"):
            await self.client.ping()
