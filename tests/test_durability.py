"""``Queue(durability=...)``: writes wait for replicas (WAIT on the same connection).

Every test runs a master and a replica of its own (``replicated``). A replica that does not
confirm is a replica stopped with SIGSTOP: still connected, so the master counts it, but
silent, as a replica behind a cut or a hung process is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import anyio
import pytest

import queue_async as qa
from queue_async.embedded import EmbeddedServer
from tests.conftest import REPLICATED_MASTER, Replicated, unique_name, wait_for_replicas

pytestmark = pytest.mark.anyio

ON = qa.Durability(replicas=1, timeout=2.0)
SHORT = qa.Durability(replicas=1, timeout=0.2)


@pytest.fixture
async def master_queue(replicated: Replicated) -> AsyncIterator[qa.Queue]:
    q = qa.Queue(replicated.master.url, name=unique_name(), durability=ON)
    yield q
    await q.close()


@pytest.fixture
async def replica_view(master_queue: qa.Queue, replicated: Replicated) -> AsyncIterator[qa.Queue]:
    """The same queue read from the replica: what a failover would leave."""
    q = qa.Queue(replicated.replica.url, name=master_queue.name)
    yield q
    await q.close()


@contextlib.contextmanager
def silenced(replica: EmbeddedServer | subprocess.Popen[bytes]) -> Iterator[None]:
    """The replica frozen (SIGSTOP): connected, but it confirms nothing until thawed."""
    process = replica.process if isinstance(replica, EmbeddedServer) else replica
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


async def test_an_acknowledged_enqueue_is_on_the_replica(
    master_queue: qa.Queue, replica_view: qa.Queue
) -> None:
    handle = await master_queue.enqueue("t.echo", 1)

    # No wait for replication here: the enqueue returned only once the replica had it.
    assert await replica_view.job_status(handle.id) == qa.JobStatus.READY


async def test_concurrent_enqueues_each_wait_for_the_replica(
    master_queue: qa.Queue, replica_view: qa.Queue
) -> None:
    handles: list[qa.JobHandle[object]] = []

    async def one(i: int) -> None:
        handles.append(await master_queue.enqueue("t.echo", i))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(one, i)

    statuses = {await replica_view.job_status(h.id) for h in handles}
    assert statuses == {qa.JobStatus.READY}


async def test_a_batch_of_several_transactions_is_on_the_replica(
    master_queue: qa.Queue, replica_view: qa.Queue
) -> None:
    # 2,500 jobs: three script calls in one MULTI, then WAIT, in one round trip.
    handles = await master_queue.enqueue_many(master_queue.call("t.echo", i) for i in range(2500))

    keys = replica_view._broker.keys
    assert await replica_view.client.hlen(keys.fresh) == 2500 == len(handles)


async def test_unconfirmed_enqueue_raises_not_replicated_and_a_repeat_adds_nothing(
    replicated: Replicated, replica_view: qa.Queue
) -> None:
    q = qa.Queue(replicated.master.url, name=replica_view.name, durability=SHORT)
    try:
        await q.check_server()  # while the replica still answers
        with silenced(replicated.replica), pytest.raises(qa.NotReplicated) as raised:
            await q.enqueue("t.echo", 1)
        error = raised.value
        assert isinstance(error, qa.BrokerError)
        assert (error.replicas, error.wanted, error.fsynced) == (0, 1, True)
        assert "0 of the 1 replicas" in str(error) and "same job ids" in str(error)
        [handle] = error.handles
        # The job is on the master, and runs whatever the replicas say.
        assert await q.job_status(handle.id) == qa.JobStatus.READY

        # Once the replica is back, the same id again: confirmed, nothing enqueued twice.
        # (ON: the thawed replica has a moment's backlog to read first.)
        async with qa.Queue(replicated.master.url, name=q.name, durability=ON) as patient:
            [again] = await patient.enqueue_many(error.remaining)
        assert again.id == handle.id and again.existing
        assert await replica_view.job_status(handle.id) == qa.JobStatus.READY
        assert (await q.stats()).ready == 1
    finally:
        await q.close()


async def test_unconfirmed_enqueue_many_names_every_job(replicated: Replicated) -> None:
    q = qa.Queue(replicated.master.url, name=unique_name(), durability=SHORT)
    try:
        await q.check_server()
        specs = [q.call("t.echo", i) for i in range(10)]
        with silenced(replicated.replica), pytest.raises(qa.NotReplicated) as raised:
            await q.enqueue_many(specs)
        assert len(raised.value.handles) == len(raised.value.remaining) == 10
        assert (await q.stats()).ready == 10
    finally:
        await q.close()


async def test_an_unconfirmed_transaction_of_a_large_batch_stops_it(
    replicated: Replicated,
) -> None:
    # 6,000 jobs: two transactions; the first lands on the master unconfirmed, so the
    # second is not sent and the batch reports itself incomplete.
    q = qa.Queue(replicated.master.url, name=unique_name(), durability=SHORT)
    try:
        await q.check_server()
        with silenced(replicated.replica), pytest.raises(qa.EnqueueIncomplete) as raised:
            await q.enqueue_many(q.call("t.echo", i) for i in range(6000))
        error = raised.value
        assert "replicas did not confirm" in str(error)
        assert (len(error.landed), len(error.unsure), len(error.not_sent)) == (5000, 0, 1000)
        assert (await q.stats()).ready == 5000
        async with qa.Queue(replicated.master.url, name=q.name, durability=ON) as patient:
            await patient.enqueue_many(error.remaining)
        assert (await q.stats()).ready == 6000
    finally:
        await q.close()


def _worker_queue(url: str, name: str, durability: qa.Durability) -> qa.Queue:
    q = qa.Queue(url, name=name, durability=durability)

    @q.task(name="t.echo")
    async def echo(x: int) -> int:
        return x

    @q.task(name="t.boom", retries=0)
    async def boom() -> None:
        raise RuntimeError("boom")

    return q


async def _complete_one_and_fail_one(
    replicated: Replicated, name: str, durability: qa.Durability, *, silent: bool
) -> tuple[str, str]:
    """A worker completes one job and fails another for good, the replica frozen or not;
    both outcomes are on the master. Returns the two ids."""
    q = _worker_queue(replicated.master.url, name, durability)
    try:
        # Enqueued with the long timeout: a short one may run out on a loaded machine.
        async with qa.Queue(replicated.master.url, name=name, durability=ON) as producer:
            done = await producer.enqueue("t.echo", 7)
            dead = await producer.enqueue("t.boom")
        with silenced(replicated.replica) if silent else contextlib.nullcontext():
            await qa.Worker(q).run(burst=True)
        assert await q.job_status(done.id) == qa.JobStatus.DONE
        assert await q.job_status(dead.id) == qa.JobStatus.DEAD
    finally:
        await q.close()
    return done.id, dead.id


async def test_worker_outcomes_are_on_the_replica_when_the_worker_moves_on(
    replicated: Replicated, master_queue: qa.Queue, replica_view: qa.Queue
) -> None:
    done, dead = await _complete_one_and_fail_one(replicated, master_queue.name, ON, silent=False)

    assert await replica_view.job_status(done) == qa.JobStatus.DONE
    assert await replica_view.job_status(dead) == qa.JobStatus.DEAD


async def test_worker_logs_unconfirmed_outcomes_and_goes_on(
    replicated: Replicated, master_queue: qa.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="queue_async")
    _, dead = await _complete_one_and_fail_one(replicated, master_queue.name, SHORT, silent=True)

    text = caplog.text
    assert "completion(s) were recorded on the master, but 0 of the 1 replicas" in text
    assert f"job {dead}: its failed try was recorded on the master, but 0 of" in text


async def test_durability_on_a_server_without_replicas_is_refused(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    q = _worker_queue(redis_url, unique_name(), ON)
    try:
        with pytest.raises(qa.BrokerError, match="0 connected replicas") as raised:
            await q.enqueue("t.echo", 1)
        assert not isinstance(raised.value, qa.NotReplicated)
        assert (await q.stats()).ready == 0  # refused before anything was sent

        # A worker does not exit: it backs off and checks again (replicas may come back).
        caplog.set_level(logging.WARNING, logger="queue_async")
        worker = qa.Worker(q)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(10):
                while "0 connected replicas" not in caplog.text:
                    await anyio.sleep(0.02)
            worker.stop()
        assert "Redis refused a call" in caplog.text
    finally:
        await q.close()


async def test_durability_on_a_replica_is_refused(replicated: Replicated) -> None:
    q = qa.Queue(replicated.replica.url, name=unique_name(), durability=ON)
    try:
        with pytest.raises(qa.ConfigurationError, match="is a replica"):
            await q.enqueue("t.echo", 1)
    finally:
        await q.close()


async def test_local_fsync_needs_an_append_only_file(replicated: Replicated) -> None:
    q = qa.Queue(
        replicated.master.url,
        name=unique_name(),
        durability=qa.Durability(replicas=1, local_fsync=True),
    )
    try:
        with pytest.raises(qa.ConfigurationError, match="appendonly"):
            await q.enqueue("t.echo", 1)
    finally:
        await q.close()


async def test_local_fsync_waits_for_the_masters_disk() -> None:
    with EmbeddedServer(appendonly=True, args=REPLICATED_MASTER) as master:
        args = ("--replicaof", f"127.0.0.1 {master.port}")
        with EmbeddedServer(args=args) as replica:
            wait_for_replicas(master.port, 1)
            durability = qa.Durability(replicas=1, timeout=1.0, local_fsync=True)
            q = qa.Queue(master.url, name=unique_name(), durability=durability)
            view = qa.Queue(replica.url, name=q.name)
            try:
                handle = await q.enqueue("t.echo", 1)
                assert await view.job_status(handle.id) == qa.JobStatus.READY
            finally:
                await q.close()
                await view.close()


@pytest.mark.parametrize(
    ("durability", "message"),
    [
        (qa.Durability(timeout=5.0), "shorter than command_timeout"),
        ({"replicas": 1}, "takes a queue_async.Durability"),
    ],
)
def test_bad_durability_settings_are_refused(durability: object, message: str) -> None:
    with pytest.raises(qa.ConfigurationError, match=message):
        qa.Queue("redis://127.0.0.1:1/0", durability=durability)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [{"replicas": 0}, {"replicas": True}, {"timeout": 0}, {"timeout": -1}, {"timeout": "1"}],
)
def test_durability_fields_are_validated(fields: dict[str, Any]) -> None:
    with pytest.raises(qa.ConfigurationError, match=r"replicas|timeout"):
        qa.Durability(**fields)


def test_durability_takes_seconds_or_a_timedelta() -> None:
    assert qa.Durability(timeout=timedelta(milliseconds=250)).timeout_ms == 250
    assert qa.Durability(timeout=0.0001).timeout_ms == 1


async def test_a_sharded_durable_queue_waits_on_every_shard(replicated: Replicated) -> None:
    name = unique_name()
    async with (
        qa.Queue(replicated.master.url, name=name, durability=ON, shards=3) as q,
        qa.Queue(replicated.replica.url, name=name, shards=3) as view,
    ):
        handles = await q.enqueue_many([q.call("t.echo", i) for i in range(300)])
        singles = [await q.enqueue("t.echo", i) for i in range(10)]
        for handle in [*handles, *singles]:  # on the replica when the call returned
            assert await view.job_status(handle.id) == qa.JobStatus.READY
        short = qa.Queue(replicated.master.url, name=name, durability=SHORT, shards=3)
        try:
            await short.check_server()
            with silenced(replicated.replica), pytest.raises(qa.EnqueueIncomplete) as raised:
                await short.enqueue_many([short.call("t.echo", i) for i in range(300)])
        finally:
            await short.close()
        # The first shard's jobs landed on the master, unconfirmed; the others were not sent.
        error = raised.value
        assert 0 < len(error.landed) < 300
        assert len(error.landed) + len(error.not_sent) == 300
        assert {short.shard_for(h.id).name for h in error.landed} == {short.shards[0].name}
        assert len(error.remaining) == len(error.not_sent)
