"""Where the jobs of a sharded queue live: shard names, and the shard of a job id.

A sharded queue (``Queue(name, shards=N)``) is N queues of its own, one hash tag each, so
that on a Redis Cluster one busy logical queue is served by several masters instead of one.
Each shard is a complete queue (its own ready list, schedule, dead set, limits), so every
script still touches one slot.

A job's shard follows from its id alone (CRC-32 of the id, modulo N), so that any process
can find a job from its id without asking the server. A job that must go with others (a
``shard_key``, a unique key, a concurrency key) is given a generated id that falls in that
key's shard.

Shard names are ``<name>.<k>``, k counted up from 0 until every one of N equal ranges of
the cluster's 16,384 hash slots holds one name: so on a cluster whose masters own equal,
contiguous slot ranges (as ``valkey-cli --cluster create`` makes them), N a multiple of the
masters puts N / masters shards on each master. The names depend on ``name`` and N only:
every process computes the same ones.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import lru_cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from queue_async.exceptions import ConfigurationError
from queue_async.identifiers import check_name

__all__ = ["MAX_SHARDS", "check_shards", "id_in_shard", "shard_names", "shard_of"]

MAX_SHARDS = 1024


def check_shards(shards: object) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ConfigurationError(
            f"shards must be an integer from 1 to {MAX_SHARDS}, not {shards!r}"
        )
    return shards


@lru_cache(maxsize=256)
def shard_names(name: str, shards: int) -> tuple[str, ...]:
    """The queue names of the N shards of ``name``, shard i's hash slot in the i-th of N
    equal slot ranges; ``(name,)`` for one shard."""
    check_shards(shards)
    if shards == 1:
        return (name,)
    names: list[str | None] = [None] * shards
    missing = shards
    k = 0
    while missing:
        candidate = f"{name}.{k}"
        k += 1
        place = key_slot(candidate.encode()) * shards // REDIS_CLUSTER_HASH_SLOTS
        if names[place] is None:
            names[place] = check_name("shard name", candidate)
            missing -= 1
    return tuple(name for name in names if name is not None)


def shard_of(text: str, shards: int) -> int:
    """The shard a job id (or a routing key) belongs to."""
    return zlib.crc32(text.encode()) % shards


def id_in_shard(new_id: Callable[[], str], key: str, shards: int) -> str:
    """A new job id in the shard of ``key``: drawn until one falls there (N draws on
    average; each is a fraction of a microsecond)."""
    wanted = shard_of(key, shards)
    while True:
        job_id = new_id()
        if shard_of(job_id, shards) == wanted:
            return job_id
