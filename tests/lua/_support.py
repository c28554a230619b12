"""Helpers for calling the Lua scripts one at a time and reading the keys they leave."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

import queue_async as qa
from queue_async.broker import wire
from queue_async.broker.scripts import Arg
from queue_async.broker.wire import (
    LEASED_FIELDS,
    Opt,
    fresh_job_fields,
    pack_fields,
    pack_headers,
    pack_job,
    unpack_fields,
)
from tests.helpers import fifo_ids

PRIORITY_SHIFT = 2**32
"""Ready score = priority * 2^32 + sequence number (see lua/includes/ready.lua)."""
LONG_MS = 3_600_000
"""A lease, delay or keep long enough never to run out during a test."""
DEAD_AGE_MS = 7 * 86_400_000
DEAD_LEN = 10_000
GRACE_MS = 20_000
"""How long an expired lease is suspected before recovery: a worker's 2 x heartbeat."""
TASK = "tests.lua.task"
PAYLOAD = b'[[1, 2], {"k": "v"}]'


def job(
    job_id: str,
    *,
    task: str = TASK,
    payload: bytes = PAYLOAD,
    priority: int = 0,
    delay_ms: int = 0,
    at_ms: int = 0,
    retries: Arg = "",
    timeout: Arg = "",
    keep: Arg = "",
    headers: dict[str, str] | None = None,
) -> bytes:
    """One job packed for enqueue.lua (options packed, "" when all are defaults)."""
    options: list[bytes | str | int] = [""] * len(Opt)
    options[Opt.PRIORITY] = priority
    options[Opt.DELAY] = delay_ms or ""
    options[Opt.AT] = at_ms or ""
    options[Opt.RETRIES] = retries
    options[Opt.TIMEOUT] = timeout
    options[Opt.KEEP] = keep
    options[Opt.HEADERS] = pack_headers(headers) if headers else ""
    default = [0] + [""] * (len(Opt) - 1)
    packed = b"" if options == default else pack_fields(options)
    return pack_job(job_id, packed, task, payload)


async def enqueue(queue: qa.Queue, *job_ids: str, **options: Any) -> list[int]:
    """Enqueue jobs with these ids, all with the same options."""
    return await queue._broker.scripts.enqueue(
        b"".join(job(job_id, **options) for job_id in job_ids)
    )


@dataclass
class Leased:
    id: str
    task: str
    payload: bytes
    attempts: int
    enqueued: int
    retries: str
    timeout: str
    keep: str
    token: str
    headers: str


@dataclass
class LeaseReply:
    wait_ms: int
    scheduled: int
    jobs: list[Leased]

    @property
    def ids(self) -> list[str]:
        return [j.id for j in self.jobs]

    def token(self, job_id: str) -> str:
        return next(j.token for j in self.jobs if j.id == job_id)


def parse_lease(reply: list[Any]) -> LeaseReply:
    """Split lease.lua's reply; jobs handed to the inbox come first, as the worker sees them."""
    handed = int(reply[2])
    jobs = [_leased(unpack_fields(packed)) for packed in reply[3 : 3 + handed]]
    start = 3 + handed
    assert (len(reply) - start) % LEASED_FIELDS == 0, reply
    for b in range(start, len(reply), LEASED_FIELDS):
        f = reply[b : b + LEASED_FIELDS]
        attempts = f[wire.Leased.ATTEMPTS]
        assert isinstance(attempts, int), f"attempts must be an integer reply, got {attempts!r}"
        jobs.append(_leased(f))
    return LeaseReply(int(reply[0]), int(reply[1]), jobs)


def _leased(f: list[Any]) -> Leased:
    place = wire.Leased
    return Leased(
        id=f[place.ID].decode(),
        task=f[place.TASK].decode(),
        payload=f[place.PAYLOAD],
        attempts=int(f[place.ATTEMPTS]),
        enqueued=int(f[place.ENQUEUED]),
        retries=f[place.RETRIES].decode(),
        timeout=f[place.TIMEOUT].decode(),
        keep=f[place.KEEP].decode(),
        token=f[place.TOKEN].decode(),
        headers=f[place.HEADERS].decode(),
    )


async def lease(
    queue: qa.Queue,
    count: int = 100,
    *,
    lease_ms: int = LONG_MS,
    lease_id: str = "lease-1",
    worker_id: str = "worker-1",
    max_stalls: int = 3,
    dead_max_age_ms: int = DEAD_AGE_MS,
    dead_max_len: int = DEAD_LEN,
    max_idle_ms: int = 0,
    grace_ms: int = GRACE_MS,
) -> LeaseReply:
    reply = await queue._broker.scripts.lease(
        count,
        lease_ms,
        lease_id,
        worker_id,
        max_stalls,
        dead_max_age_ms,
        dead_max_len,
        max_idle_ms,
        grace_ms,
    )
    return parse_lease(reply)


async def fields(queue: qa.Queue, job_id: str) -> dict[str, str]:
    """The job hash, decoded (payload and result included, as text); for a fresh job (see
    lua/includes/records.lua), the fields its record stands for."""
    raw = await queue.client.hgetall(queue._broker.keys.job(job_id))
    record = await queue.client.hget(queue._broker.keys.fresh, job_id)
    if record is not None:
        assert not raw, f"{job_id} is both fresh and a job hash"
        raw = fresh_job_fields(record)
    return {_text(k): v.decode(errors="replace") for k, v in raw.items()}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def ready_ids(queue: qa.Queue) -> list[str]:
    """The ready jobs in the order lease.lua takes them: priorities below 0, fifo, the rest
    (without the tombstones cancelled jobs leave in fifo: see remove_ready in
    lua/includes/ready.lua)."""
    ranked = await members(queue, queue._broker.keys.ready)
    fifo = await fifo_ids(queue)
    first = [m for m, score in ranked.items() if score < 0]
    return first + fifo + [m for m, score in ranked.items() if score >= 0]


async def members(queue: qa.Queue, key: str) -> dict[str, int]:
    """A sorted set as {member: integer score}."""
    pairs = await queue.client.zrange(key, 0, -1, withscores=True)
    return {m.decode(): int(s) for m, s in pairs}


async def meta(queue: qa.Queue) -> dict[str, int]:
    raw = await queue.client.hgetall(queue._broker.keys.meta)
    return {k.decode(): int(v) for k, v in raw.items()}


async def wake_len(queue: qa.Queue) -> int:
    return int(await queue.client.llen(queue._broker.keys.wake))


async def server_ms(queue: qa.Queue) -> int:
    """The server's clock, as the scripts read it."""
    seconds, micros = await queue.client.time()
    return seconds * 1000 + micros // 1000


async def expire_leases(queue: qa.Queue, *job_ids: str) -> None:
    """Move the lease deadlines of these active jobs into the past, as a stalled worker's,
    with the grace that follows a first expiry (see recover_expired in
    lua/includes/leases.lua) spent too."""
    past = await server_ms(queue) - 1000
    await queue.client.zadd(queue._broker.keys.active, dict.fromkeys(job_ids, past), xx=True)
    for job_id in job_ids:
        await queue.client.hset(queue._broker.keys.job(job_id), "suspect", past)


async def step_clock(queue: qa.Queue, *job_ids: str, seconds: float = 60) -> None:
    """What a forward step of the server clock does to these active jobs' leases: their
    deadlines fall that far behind the clock (nothing else about them changes)."""
    for job_id in job_ids:
        score = await queue.client.zscore(queue._broker.keys.active, job_id)
        assert score is not None, f"{job_id} is not active"
        await queue.client.zadd(
            queue._broker.keys.active, {job_id: int(score - seconds * 1000)}, xx=True
        )


async def make_due(queue: qa.Queue, *job_ids: str) -> None:
    """Move the due time of these scheduled jobs into the past."""
    past = await server_ms(queue) - 1000
    await queue.client.zadd(queue._broker.keys.scheduled, dict.fromkeys(job_ids, past), xx=True)


async def wait_for_server_time(queue: qa.Queue, at_ms: int, *, limit: float = 5.0) -> None:
    """Wait (in short real sleeps) until the server's clock is past ``at_ms``."""
    with anyio.fail_after(limit):
        while await server_ms(queue) <= at_ms:
            await anyio.sleep(0.01)


async def lease_one(queue: qa.Queue, job_id: str, **options: Any) -> str:
    """Enqueue one job and lease it; returns its token."""
    assert await enqueue(queue, job_id) == [1]
    reply = await lease(queue, 1, **options)
    assert reply.ids == [job_id]
    return reply.jobs[0].token
