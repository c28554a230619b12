"""A real local Redis Sentinel deployment: a master, one replica and three sentinels, all of the
embedded Valkey (``valkey-server --sentinel`` for the sentinels), on free ports.

Started once per session for the tests that only use it (``nox -s tests_sentinel``;
tests/conftest.py collects this folder only with ``QA_SENTINEL_TESTS=1``); a test that kills
the master asks for ``own_sentinel``, a deployment of its own. The sentinels see a master down
after ``DOWN_AFTER_MS`` and may fail over again after ``FAILOVER_TIMEOUT_MS``, so a failover
takes a few seconds.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from redis.asyncio.sentinel import Sentinel

from queue_async.embedded import _free_port, find_server_binary

SERVICE = "qa-service"
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 2000


def _info(port: int, section: str) -> dict[str, object]:
    with redis.Redis(port=port, socket_timeout=1) as node:
        return dict(node.info(section))


class LocalSentinel:
    """Two data servers (a master and its replica) and three sentinels watching them."""

    def __init__(self) -> None:
        self.binary = find_server_binary()
        self._files = tempfile.TemporaryDirectory(prefix="qa-sentinel-")
        self.folder = Path(self._files.name)
        self.data_ports = [_free_port(), _free_port()]
        self.sentinel_ports = [_free_port() for _ in range(SENTINELS)]
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: list[subprocess.Popen[bytes]] = []
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        master, replica = self.data_ports
        self.start_server(master)
        self.start_server(replica, replica_of=master)
        for port in self.sentinel_ports:
            self._start_sentinel(port, master)
        self.wait_for(self._watching, "see the master, its replica and each other")

    def start_server(self, port: int, *, replica_of: int | None = None) -> None:
        """(Re)start the data server on ``port``; the sentinels reconfigure it as they see fit."""
        data = self.folder / str(port)
        data.mkdir(exist_ok=True)
        settings = {
            "port": str(port),
            "bind": "127.0.0.1",
            "dir": str(data),
            "save": "",
            "appendonly": "no",
            "maxmemory-policy": "noeviction",
        }
        if replica_of is not None:
            settings["replicaof"] = f"127.0.0.1 {replica_of}"
        args = [self.binary, *(part for k, v in settings.items() for part in (f"--{k}", v))]
        self.servers[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.wait_for(lambda: _info(port, "server") != {}, f"start the server on {port}")

    def _start_sentinel(self, port: int, master: int) -> None:
        config = self.folder / f"sentinel-{port}.conf"  # the sentinel rewrites it
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master} {QUORUM}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.sentinels.append(
            subprocess.Popen(
                [self.binary, str(config), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def _watching(self) -> bool:
        """Every sentinel knows the master, a replica in sync, and the other sentinels."""
        for port in self.sentinel_ports:
            with redis.Redis(port=port, socket_timeout=1) as sentinel:
                state = sentinel.sentinel_master(SERVICE)
            if not state["is_master"] or state["is_sdown"] or state["is_odown"]:
                return False
            if state["num-slaves"] < 1 or state["num-other-sentinels"] < SENTINELS - 1:
                return False
        replicas = [port for port in self.data_ports if port != self.master_port()]
        return all(
            _info(port, "replication").get("master_link_status") == "up" for port in replicas
        )

    def wait_for(self, check: Callable[[], object], what: str, seconds: float = 30.0) -> float:
        """Wait until ``check()`` is true; returns when (``time.monotonic()``)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if check():
                    return time.monotonic()
            except (redis.exceptions.RedisError, OSError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the local Sentinel deployment did not {what} within {seconds:g} s")

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                with redis.Redis(port=port, socket_timeout=1) as sentinel:
                    _, master = sentinel.sentinel_get_master_addr_by_name(SERVICE)
                    return int(master)
            except redis.exceptions.RedisError:
                continue
        raise RuntimeError("no sentinel answered")

    def kill_master(self) -> int:
        """SIGKILL the master's server; returns its port."""
        port = self.master_port()
        process = self.servers.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return port

    def wait_failover(self, old: int, seconds: float = 30.0) -> int:
        """Wait until every sentinel names a master other than ``old``; returns its port."""

        def moved() -> bool:
            names = set()
            for port in self.sentinel_ports:
                with redis.Redis(port=port, socket_timeout=1) as sentinel:
                    names.add(int(sentinel.sentinel_get_master_addr_by_name(SERVICE)[1]))
            return len(names) == 1 and old not in names

        self.wait_for(moved, "fail over", seconds)
        new = self.master_port()
        self.wait_for(lambda: _info(new, "replication")["role"] == "master", "promote a replica")
        # An old master still running (a manual failover) takes writes until the sentinels
        # make it a replica of the new one (and close its clients' connections).
        for port in self.servers:
            if port != new:
                self.wait_for(
                    lambda port=port: _info(port, "replication").get("master_port") == new,
                    f"make {port} a replica of {new}",
                    seconds,
                )
        return new

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def manager(self) -> Sentinel:
        return Sentinel([("127.0.0.1", port) for port in self.sentinel_ports], socket_timeout=1)

    def stop(self) -> None:
        """Kill every process and remove the files."""
        processes = [*self.sentinels, *self.servers.values()]
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()
        self._files.cleanup()

    def __enter__(self) -> LocalSentinel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def sentinel() -> Iterator[LocalSentinel]:
    """The session's deployment: its master never changes."""
    with LocalSentinel() as local:
        yield local


@pytest.fixture
def own_sentinel() -> Iterator[LocalSentinel]:
    """A deployment of this test's own, whose master it may kill."""
    with LocalSentinel() as local:
        yield local


@pytest.fixture(scope="session")
def redis_url(sentinel: LocalSentinel) -> str:
    return sentinel.url


@pytest.fixture
async def client(sentinel: LocalSentinel) -> AsyncIterator[redis.asyncio.Redis]:
    """A ``master_for`` client of the session's deployment."""
    manager = sentinel.manager()
    c = manager.master_for(SERVICE)
    yield c
    await c.aclose()
    for each in manager.sentinels:
        await each.aclose()
