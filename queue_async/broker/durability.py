"""Writes that wait for replicas: the write and ``WAIT`` on one connection, in one round trip.

``WAIT n timeout`` counts the replicas that acknowledged the writes of the connection it is
sent on, so it must follow the script call on that very connection, before anything else
uses it. Both go in one pipeline: the call costs one round trip, plus the time the slowest
of the ``n`` fastest replicas takes to acknowledge.

On one server a redis-py pipeline holds one connection for all its commands. On a cluster
redis-py's ``ClusterPipeline`` is no use here: it routes a keyless ``WAIT`` by its command
policy (all shards) rather than to the node that took the write, and after a connection
error it sends the commands again with their node choices forgotten. So the commands go to
the master of the queue's slot as one batch on one of that node's connections
(``ClusterNode.execute_pipeline``), and a redirect or a failover is handled here: the slot
map is read again and the whole batch is sent again, a bounded number of times. Sending
again is safe for the calls that wait (enqueue with fixed ids, token-checked completions
and failures), as it is for redis-py's own retries.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster

from queue_async.options import Durability

__all__ = ["Confirmation", "Unconfirmed", "send_as_is", "send_confirmed", "send_to_slot_master"]

Command = Sequence[Any]

# A cluster batch is sent again after these (the slot moved, or its master is failing over).
_RESEND = (
    redis.exceptions.ConnectionError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
_CLUSTER_TRIES = 4


@dataclass(frozen=True, slots=True)
class Confirmation:
    """How far a write got: replicas that acknowledged it, and the master's own fsync."""

    replicas: int
    fsynced: bool

    def enough(self, durability: Durability) -> bool:
        return self.replicas >= durability.replicas and self.fsynced


class Unconfirmed(Exception):
    """A write the master made but fewer replicas (or no fsync) confirmed in time.

    ``reply`` is the script's reply, as if the call had succeeded.
    """

    def __init__(self, reply: Any, confirmation: Confirmation, durability: Durability) -> None:
        super().__init__(describe(confirmation, durability))
        self.reply = reply
        self.confirmation = confirmation
        self.durability = durability

    def per_item(self) -> list[Unconfirmed]:
        """One ``Unconfirmed`` per item of a reply that is a list (one per job)."""
        return [Unconfirmed(item, self.confirmation, self.durability) for item in self.reply]


def describe(confirmation: Confirmation, durability: Durability) -> str:
    seconds = durability.seconds
    parts = []
    if confirmation.replicas < durability.replicas:
        parts.append(
            f"{confirmation.replicas} of the {durability.replicas} replicas asked for "
            f"confirmed it within {seconds:g} s"
        )
    if not confirmation.fsynced:
        parts.append(f"the master did not write it to its append-only file within {seconds:g} s")
    return " and ".join(parts)


def _waits(durability: Durability) -> list[Command]:
    ms = durability.timeout_ms
    waits: list[Command] = [("WAIT", durability.replicas, ms)]
    if durability.local_fsync:
        waits.append(("WAITAOF", 1, 0, ms))
    return waits


async def send_confirmed(
    client: redis.asyncio.Redis | RedisCluster,
    durability: Durability,
    key: str,
    commands: Sequence[Command],
) -> tuple[list[Any], Confirmation]:
    """Send ``commands`` (each a write of ``key``'s slot), then WAIT (and WAITAOF), on one
    connection in one round trip. Returns the commands' replies (an error is returned, not
    raised) and how far the writes got. A failed WAIT raises."""
    replies = await send_as_is(client, key, [*commands, *_waits(durability)])
    own, waited = replies[: len(commands)], replies[len(commands) :]
    for reply in waited:
        if isinstance(reply, Exception):
            raise reply
    fsynced = True
    if durability.local_fsync:
        fsynced = int(waited[1][0]) >= 1
    return own, Confirmation(int(waited[0]), fsynced)


async def send_as_is(
    client: redis.asyncio.Redis | RedisCluster, key: str, commands: Sequence[Command]
) -> list[Any]:
    """Send ``commands`` (each of ``key``'s slot) as they are, on one connection in one round
    trip (on a cluster, to the master of the slot). Errors are returned as replies."""
    if isinstance(client, RedisCluster):
        return await send_to_slot_master(client, key, list(commands))
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    return replies


async def send_to_slot_master(client: RedisCluster, key: str, batch: list[Command]) -> list[Any]:
    """Send ``batch`` (commands of ``key``'s slot) on one connection to the master of that
    slot, as it is (redis-py's cluster pipeline would route a keyless command elsewhere, and
    redis-py 5 refuses its transactions); a moved slot or a lost master sends it again.
    Errors are returned as replies, not raised."""
    await client.initialize()
    for attempt in range(_CLUSTER_TRIES):
        last = attempt == _CLUSTER_TRIES - 1
        try:
            node = _slot_master(client, key)
            sent = [PipelineCommand(i, *command) for i, command in enumerate(batch)]
            await node.execute_pipeline(sent)
        except (*_RESEND, redis.exceptions.SlotNotCoveredError):
            if last:
                raise
        else:
            replies = [command.result for command in sent]
            redirect = next((r for r in replies if isinstance(r, _RESEND)), None)
            if redirect is None or last:
                return replies
        # A moved slot or a master that is gone: read the slot map again, then resend. As
        # redis-py's own cluster pipeline does: close the nodes (so that none is left open
        # when the map drops it) and initialize again.
        await client.aclose()
        await asyncio.sleep(random.uniform(0, min(0.25, 0.02 * 2**attempt)))
        try:
            await client.initialize()
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError):
            if last:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _slot_master(client: RedisCluster, key: str) -> ClusterNode:
    node = client.get_node_from_key(key)
    if node is None:  # None only for replica=True; keeps mypy and a future redis-py honest
        raise redis.exceptions.SlotNotCoveredError(f"no master serves the slot of {key}")
    return node
