"""A real local Redis Cluster: three masters of the embedded Valkey, on free ports.

Started once per session (``nox -s tests_cluster``; tests/conftest.py collects this folder
only with ``QA_CLUSTER_TESTS=1``). It overrides ``redis_url`` and ``client``, so the tests
of tests/ that this folder reruns get a ``redis+cluster://`` queue with a unique name, and so
with a hash slot, and often a master, of its own.

``replicated_cluster`` is another one, of a test's own: three masters with one replica each,
for the tests that kill a master (a replica takes over within about two seconds).
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from queue_async.embedded import find_server_binary

MASTERS = 3


def _free_ports(count: int) -> list[int]:
    """Free ports whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _ping(port: int) -> bool:
    with redis.Redis(port=port) as node:
        return bool(node.ping())


def _wait_until(check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except redis.exceptions.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the local cluster did not {what} within {seconds:g} s")
        time.sleep(0.05)


def _state_ok(node: redis.Redis) -> bool:
    info = node.execute_command("CLUSTER INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text or "'cluster_state': 'ok'" in text


class LocalCluster:
    """``MASTERS`` valkey-server processes in cluster mode, joined by valkey-cli, with
    ``replicas`` replicas each."""

    def __init__(self, folder: Path, *, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        server = find_server_binary()
        cli = Path(server).with_name("valkey-cli")
        if not cli.is_file():
            pytest.skip(f"no valkey-cli next to {server}: cannot create a cluster")
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = _free_ports(MASTERS * (1 + replicas))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.commands: list[list[str]] = []
        try:
            self._start(server, cli, folder)
        except BaseException:
            self.stop()
            raise

    def _start(self, server: str, cli: Path, folder: Path) -> None:
        for port in self.ports:
            data = folder / str(port)
            data.mkdir()
            settings = {
                "port": str(port),
                "bind": "127.0.0.1",
                "cluster-enabled": "yes",
                "cluster-config-file": str(data / "nodes.conf"),
                "cluster-node-timeout": str(self.node_timeout_ms),
                # A replica syncs at once, not after waiting 5 s for others.
                "repl-diskless-sync-delay": "0",
                "dir": str(data),
                "save": "",
                "appendonly": "no",
                "maxmemory-policy": "noeviction",
            }
            args = [server, *(part for k, v in settings.items() for part in (f"--{k}", v))]
            self.commands.append(args)
            self.processes.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in self.ports:
            _wait_until(lambda port=port: _ping(port), "start")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        create = [str(cli), "--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas)]
        subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True, timeout=60)
        _wait_until(self._ready, "agree on its slots")

    def _ready(self) -> bool:
        for port in self.ports:
            with redis.Redis(port=port) as node:
                if not _state_ok(node):
                    return False
                if len(node.execute_command("CLUSTER SLOTS")) != MASTERS:
                    return False
                info = node.info("replication")
                if info["role"] == "master" and self.replicas:
                    online = [v for k, v in info.items() if k.startswith("slave")]
                    if sum(v.get("state") == "online" for v in online) < self.replicas:
                        return False
        return True

    def process_on(self, port: int) -> subprocess.Popen[bytes]:
        return self.processes[self.ports.index(port)]

    def replica_of(self, master: int) -> int:
        """The port of the master's (first) replica."""
        with redis.Redis(port=master) as node:
            info = node.info("replication")
        return int(info["slave0"]["port"])

    def wait_promoted(self, dead: int, seconds: float = 30.0) -> None:
        """Until the living nodes agree that no slot is served by the dead master."""

        def promoted() -> bool:
            for port in self.ports:
                if port == dead:
                    continue
                with redis.Redis(port=port) as node:
                    for _, _, master, *_ in node.execute_command("CLUSTER SLOTS"):
                        if int(master[1]) == dead:
                            return False
                if not _state_ok(node):
                    return False
            return True

        _wait_until(promoted, "promote a replica", seconds)

    def restart(self, port: int) -> None:
        """Start a killed node again, on its port with its nodes.conf."""
        index = self.ports.index(port)
        self.processes[index] = subprocess.Popen(
            self.commands[index], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_until(lambda: _ping(port), "restart a node")

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait()


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    with tempfile.TemporaryDirectory(prefix="qa-cluster-") as folder:
        local = LocalCluster(Path(folder))
        try:
            yield local
        finally:
            local.stop()


@pytest.fixture
def replicated_cluster() -> Iterator[LocalCluster]:
    """A cluster of this test's own, each master with a replica; a master fails over after
    1 s of silence (cluster-node-timeout)."""
    with tempfile.TemporaryDirectory(prefix="qa-cluster-") as folder:
        local = LocalCluster(Path(folder), replicas=1, node_timeout_ms=1000)
        try:
            yield local
        finally:
            local.stop()


@pytest.fixture(scope="session")
def redis_url(cluster: LocalCluster) -> str:
    return cluster.url


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[redis.asyncio.RedisCluster]:
    c = redis.asyncio.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    yield c
    await c.aclose()
