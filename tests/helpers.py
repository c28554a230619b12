"""Small tools shared by tests."""

from __future__ import annotations

import pickle
from typing import Any

import anyio
import msgpack

import queue_async as qa
from queue_async.broker.wire import pack_fields, unpack_fields

# Fast enough for tests, still real: leases and heartbeats as a user could configure them.
FAST: dict[str, Any] = {
    "lease": 2.0,
    "heartbeat": 0.5,
    "max_idle_wait": 0.5,
    "shutdown_grace": 2.0,
}


async def drain(queue: qa.Queue, *, limit: float = 20.0, **settings: Any) -> qa.Worker:
    """Run a worker in burst mode until the queue has nothing ready or scheduled."""
    worker = qa.Worker(queue, **{**FAST, **settings})
    with anyio.fail_after(limit):
        await worker.run(burst=True, handle_signals=False)
    return worker


async def keys_of(queue: qa.Queue) -> set[str]:
    """Every key of the queue that exists now."""
    return {
        key.decode() async for key in queue.client.scan_iter(match=f"{queue._broker.keys.prefix}*")
    }


# A job enqueued ready lives as a compact record in the queue's `fresh` hash until it starts
# (see lua/includes/records.lua); these read and change it in either form.


async def stored_payload(queue: qa.Queue, job_id: str) -> bytes | None:
    """The payload stored for a job, fresh or not (through the one reader of job records)."""
    fields = await queue._broker.job_fields(job_id)
    return None if fields is None else fields.get("payload")


async def set_payload(queue: qa.Queue, job_id: str, payload: bytes) -> None:
    """Replace a job's stored payload (to break it on purpose)."""
    record = await queue.client.hget(queue._broker.keys.fresh, job_id)
    if record is None:
        await queue.client.hset(queue._broker.keys.job(job_id), "payload", payload)
        return
    enqueued, options, task, _ = unpack_fields(record)
    await queue.client.hset(
        queue._broker.keys.fresh, job_id, pack_fields([enqueued, options, task, payload])
    )


async def fifo_ids(queue: qa.Queue) -> list[str]:
    """Ids of the ready jobs of priority 0, oldest first; not the tombstones that cancelled
    jobs leave in fifo (see remove_ready in lua/includes/ready.lua)."""
    ids = []
    for raw in await queue.client.lrange(queue._broker.keys.fifo, 0, -1):
        fresh = await queue.client.hexists(queue._broker.keys.fresh, raw)
        if (
            fresh
            or await queue.client.hget(queue._broker.keys.job(raw.decode()), "state") == b"ready"
        ):
            ids.append(raw.decode())
    return ids


async def ready_ids(queue: qa.Queue) -> list[str]:
    """Ids of the ready jobs, both of priority 0 (fifo) and the others."""
    others = await queue.client.zrange(queue._broker.keys.ready, 0, -1)
    return [*await fifo_ids(queue), *(job_id.decode() for job_id in others)]


# Codecs other than JSON, as a user might plug in (Queue(codec=...)).


class PickleCodec:
    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)


class MsgpackCodec:
    def encode(self, value: Any) -> bytes:
        return msgpack.packb(value)  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> Any:
        return msgpack.unpackb(data, use_list=False, strict_map_key=False)
