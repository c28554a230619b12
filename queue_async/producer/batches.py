"""How ``enqueue_many`` cuts a batch into script calls and transactions, sends them, and
says what landed when one of them fails.

A batch is cut into chunks (one enqueue.lua call each) and the chunks into transactions
(MULTI ... EXEC), sent one after the other so that no client waits behind one huge EXEC. A
sharded queue's batch is grouped by shard first: a transaction never spans two shards, as
it would span two hash slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from queue_async.broker.durability import Unconfirmed
from queue_async.broker.scripts import Scripts
from queue_async.exceptions import BrokerError, EnqueueIncomplete, NotReplicated
from queue_async.options import EnqueueOptions
from queue_async.producer.handle import JobHandle
from queue_async.producer.shards import shard_of
from queue_async.producer.tasks import JobSpec

if TYPE_CHECKING:
    from queue_async.producer.queue import Queue

__all__ = [
    "CHUNK",
    "CHUNK_BYTES",
    "Transaction",
    "by_shard",
    "chunks",
    "incomplete",
    "not_replicated",
    "send",
    "transactions",
]

# Jobs per script call in enqueue_many: big enough to amortise the call, small enough that
# one script never holds the server for long; a chunk also ends past CHUNK_BYTES.
CHUNK = 1000
CHUNK_BYTES = 1 << 20
# Chunks per transaction (MULTI): a batch larger than this is sent as several transactions,
# one after the other, so that no client waits behind one huge EXEC.
_TXN_CHUNKS = 5
_TXN_BYTES = 8 << 20

Chunk = tuple[int, bytes]
"""Packed jobs for one script call, with the index (in the batch) just past its last job."""
Transaction = tuple[Scripts, list[Chunk]]
"""Chunks sent as one transaction, with the transitions of the queue (or shard) they go to."""


def chunks(jobs: list[bytes], offset: int = 0) -> list[Chunk]:
    """Packed jobs cut into script calls of at most CHUNK jobs and about CHUNK_BYTES;
    each with the index just past its last job (counted from ``offset``)."""
    cut: list[Chunk] = []
    start = size = 0
    for index, job in enumerate(jobs):
        if index > start and (index - start >= CHUNK or size + len(job) > CHUNK_BYTES):
            cut.append((offset + index, b"".join(jobs[start:index])))
            start, size = index, 0
        size += len(job)
    if jobs:
        cut.append((offset + len(jobs), b"".join(jobs[start:])))
    return cut


def transactions(cut: list[Chunk]) -> list[list[Chunk]]:
    """Chunks grouped into transactions of at most _TXN_CHUNKS and about _TXN_BYTES."""
    groups: list[list[Chunk]] = [[]]
    size = 0
    for chunk in cut:
        group = groups[-1]
        if group and (len(group) >= _TXN_CHUNKS or size + len(chunk[1]) > _TXN_BYTES):
            groups.append([])
            group, size = groups[-1], 0
        group.append(chunk)
        size += len(chunk[1])
    return groups


def by_shard(
    shards: Sequence[Scripts], encoded: list[tuple[str, bytes]]
) -> tuple[list[int], list[Transaction]]:
    """A batch grouped by shard (each job's index in ``encoded``, in the order they are
    sent), and each shard's jobs in transactions of their own; with one shard, the batch in
    its order."""
    count = len(shards)
    if count == 1:
        return list(range(len(encoded))), [
            (shards[0], group) for group in transactions(chunks([job for _, job in encoded]))
        ]
    where = [shard_of(job_id, count) for job_id, _ in encoded]
    order = sorted(range(len(encoded)), key=where.__getitem__)
    sent: list[Transaction] = []
    start = 0
    for shard_index, scripts in enumerate(shards):
        end = start
        while end < len(order) and where[order[end]] == shard_index:
            end += 1
        if end > start:
            cut = chunks([encoded[i][1] for i in order[start:end]], offset=start)
            sent += [(scripts, group) for group in transactions(cut)]
        start = end
    return order, sent


async def send(
    queue: Queue, specs: list[JobSpec[Any]], ids: list[str], sent: list[Transaction]
) -> list[int | bytes]:
    """Send the transactions one after the other, each to its queue's (or shard's) slot;
    ``EnqueueIncomplete`` if one fails after another committed."""
    replies: list[int | bytes] = []
    for scripts, transaction in sent:
        try:
            if len(transaction) == 1:
                replies += await scripts.enqueue(transaction[0][1])
            else:
                replies += await scripts.enqueue_chunks([c for _, c in transaction])
        except Unconfirmed as short:
            raise not_replicated(queue, specs, ids, replies, short) from None
        except BrokerError as exc:
            if not replies and len(sent) == 1:
                raise  # one transaction: all or none still holds
            raise incomplete(queue, specs, ids, replies, transaction, exc) from exc
    return replies


def not_replicated(
    queue: Queue,
    specs: list[JobSpec[Any]],
    ids: list[str],
    before: list[int | bytes],
    short: Unconfirmed,
) -> NotReplicated | EnqueueIncomplete:
    """The error for jobs that landed on the master unconfirmed (``short``), after the
    transactions of ``before`` that were confirmed. A batch stops at the first
    transaction that is not: the rest is not sent (``EnqueueIncomplete``)."""
    replies = [*before, *short.reply] if isinstance(short.reply, list) else [short.reply]
    if len(replies) < len(ids):
        cause = BrokerError(f"its replicas did not confirm: {short}")
        return incomplete(queue, specs, ids, replies, [(len(replies), b"")], cause)
    got = short.confirmation
    return NotReplicated(
        f"{len(ids)} job(s) were enqueued on the master, but {short}: a failover now "
        "could lose them. Enqueue them again with the same job ids (error.remaining) to "
        "wait again (nothing is added twice), or go on",
        handles=queue._handles(ids, replies),
        remaining=[_pinned(spec, i) for spec, i in zip(specs, ids, strict=True)],
        replicas=got.replicas,
        wanted=short.durability.replicas,
        fsynced=got.fsynced,
    )


def incomplete(
    queue: Queue,
    specs: list[JobSpec[Any]],
    ids: list[str],
    replies: list[int | bytes],
    failed: list[Chunk],
    exc: BrokerError,
) -> EnqueueIncomplete:
    """The error of a batch stopped part way: what landed, what may have, what was not
    sent, and the rest as specs with their ids fixed."""
    done = len(replies)
    sent = failed[-1][0]
    landed = queue._handles(ids, replies)
    unsure: list[JobHandle[Any]] = [JobHandle(queue, job_id) for job_id in ids[done:sent]]
    not_sent: list[JobHandle[Any]] = [JobHandle(queue, job_id) for job_id in ids[sent:]]
    remaining = [_pinned(spec, i) for spec, i in zip(specs[done:], ids[done:], strict=True)]
    return EnqueueIncomplete(
        f"enqueue_many stopped part way: {len(landed)} of {len(ids)} jobs were enqueued, "
        f"{len(unsure)} may have been, {len(not_sent)} were not sent ({exc}). "
        "`await queue.enqueue_many(error.remaining)` finishes the batch without duplicates",
        landed=landed,
        unsure=unsure,
        not_sent=not_sent,
        remaining=remaining,
    )


def _pinned(spec: JobSpec[Any], job_id: str) -> JobSpec[Any]:
    """The spec with its id fixed, so that enqueueing it again cannot duplicate the job."""
    if spec.options is not None:
        return replace(spec, options=spec.options.model_copy(update={"job_id": job_id}))
    return replace(spec, options=EnqueueOptions.model_validate({"job_id": job_id}))
