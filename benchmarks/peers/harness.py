"""The driver's side of an adapter run: adapter subprocesses and the server's counters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis

HERE = Path(__file__).resolve().parent
LIBRARIES = ("queue_async", "arq", "saq", "streaq", "taskiq")
PEERS = LIBRARIES[1:]


class AdapterError(RuntimeError):
    """An adapter process failed; the message carries the tail of its stderr."""


@dataclass(frozen=True)
class Library:
    """A library and the Python of its virtualenv."""

    name: str
    python: str

    @classmethod
    def find(cls, name: str, venvs: Path) -> Library:
        """queue_async runs under the driver's own Python; each peer under
        ``<venvs>/peers-<name>`` (created by ``nox -s bench_peers``)."""
        if name == "queue_async":
            return cls(name, sys.executable)
        return cls(name, str(venvs / f"peers-{name}" / "bin" / "python"))

    @property
    def installed(self) -> bool:
        return os.access(self.python, os.X_OK)

    def command(self, role: str, *args: str) -> list[str]:
        return [self.python, "-m", "adapters", self.name, role, *args]


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-2000:].strip()


def _records(out: str) -> list[dict[str, Any]]:
    records = []
    for raw in out.splitlines():
        line = raw.strip()
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def run_role(lib: Library, role: str, *args: str, timeout: float = 900.0) -> dict[str, Any]:
    """Run one adapter role to completion; its last JSON line."""
    with tempfile.TemporaryFile() as log:
        try:
            done = subprocess.run(
                lib.command(role, *args),
                cwd=HERE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AdapterError(f"{lib.name} {role} timed out after {timeout}s") from exc
        records = _records(done.stdout)
        if done.returncode != 0 or not records:
            raise AdapterError(f"{lib.name} {role} exited {done.returncode}: {_tail(log)}")
        return records[-1]


class WorkerProcess:
    """One adapter ``work`` process: started, awaited until ready, released, collected."""

    def __init__(self, lib: Library, *args: str) -> None:
        self.lib = lib
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by result() or kill()
        self.process = subprocess.Popen(
            lib.command("work", *args),
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def wait_ready(self) -> None:
        """Block until the worker prints its ready line (or dies)."""
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                self.process.wait()
                raise AdapterError(
                    f"{self.lib.name} worker exited {self.process.returncode} before it was "
                    f"ready: {_tail(self.log)}"
                )
            if '"ready"' in line:
                return

    def go(self) -> None:
        """Release a gated worker."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        """Stop a worker started with ``--until-stop``."""
        assert self.process.stdin is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()

    def result(self, timeout: float = 900.0) -> dict[str, Any]:
        """The worker's final report, once it has exited."""
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.process.kill()
            self.process.communicate()
            raise AdapterError(f"{self.lib.name} worker did not exit in {timeout}s") from exc
        finally:
            tail = _tail(self.log)
            self.log.close()
        records = _records(out)
        if self.process.returncode != 0 or not records:
            raise AdapterError(f"{self.lib.name} worker exited {self.process.returncode}: {tail}")
        report = records[-1]
        if "error" in report:
            raise AdapterError(f"{self.lib.name} worker: {report['error']}: {tail}")
        return report

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        if not self.log.closed:
            self.log.close()


class Server:
    """The one Redis/Valkey server every run uses: flush, memory and CPU counters."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)

    def flush(self) -> None:
        """FLUSHALL SYNC: every run starts from an empty server, its memory already freed
        (a plain FLUSHALL frees in the background where lazyfree-lazy-user-flush is on, as it
        is by default on Valkey 8)."""
        self.client.execute_command("FLUSHALL", "SYNC")  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if int(self.client.info("memory").get("lazyfree_pending_objects", 0)) == 0:
                return
            time.sleep(0.05)

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def cpu_seconds(self) -> float:
        """The server's CPU time so far (user + system, all its threads)."""
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    def version(self) -> str:
        info = self.client.info("server")
        if "valkey_version" in info:
            return f"valkey {info['valkey_version']}"
        return f"redis {info['redis_version']}"

    def close(self) -> None:
        self.client.close()


class CpuWindow:
    """The server's share of one core between ``start()`` and ``stop()``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cpu = 0.0
        self.wall = 0.0

    def start(self) -> None:
        self.cpu = self.server.cpu_seconds()
        self.wall = time.monotonic()

    def used(self) -> float:
        """Server CPU seconds since ``start()``."""
        return self.server.cpu_seconds() - self.cpu

    def stop(self) -> float:
        """Server CPU seconds per wall second since ``start()`` (1.0 = one full core)."""
        return self.used() / max(time.monotonic() - self.wall, 1e-9)


class ConnectionPeak:
    """The most clients connected to the server at once while in the ``with`` block, less the
    driver's own: a thread polls ``INFO clients`` every ``interval`` seconds.

    The driver's connections are the server's ``connected_clients`` on entry (this poller's
    and the driver's client), before any adapter process of the run has started.
    """

    def __init__(self, server: Server, interval: float = 0.2) -> None:
        self.client = redis.Redis.from_url(server.url, single_connection_client=True)
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def connected(self) -> int:
        """Clients connected now, less the driver's."""
        total = int(self.client.info("clients")["connected_clients"])
        return total - self.baseline

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.connected())
            self.samples += 1

    def __enter__(self) -> ConnectionPeak:
        self.baseline = self.connected()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()
