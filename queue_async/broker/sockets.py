"""Connections that write a command at once, within the socket timeout.

With a ``socket_timeout`` (every pool of ours has one: ``command_timeout``), redis-py writes
each command through ``asyncio.wait_for``, which on Python 3.11 runs the write in a task of
its own: each command waits two turns of the event loop before it leaves, behind every
callback that is ready by then. A coalesced call, sent so that the server works while the
client answers the previous call's callers, would leave only after them. Here the write is
bounded by ``asyncio.timeout`` instead, in the caller's own task; it fails as redis-py's own
does (the error is redis-py's), and its socket is closed at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import redis.exceptions
from redis.asyncio.connection import AbstractConnection

__all__ = ["prompt_writes"]


class _PromptWrites(AbstractConnection):
    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        if not timeout or not self.is_connected:
            # Not connected yet: redis-py connects, then writes as it always does.
            await super().send_packed_command(command, check_health)
            return
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call, unused-ignore]
        # Read after the health check, which may have made the connection again.
        writer = self._writer
        if writer is None:
            await super().send_packed_command(command, check_health=False)
            return
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            async with asyncio.timeout(timeout):
                writer.writelines(command)
                await writer.drain()
        except TimeoutError:
            await self._drop(writer)
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self._drop(writer)
            number, message = ("UNKNOWN", exc.args[0]) if len(exc.args) == 1 else exc.args[:2]
            raise redis.exceptions.ConnectionError(
                f"Error {number} while writing to socket. {message}."
            ) from exc
        except BaseException:
            # Cut off mid-write (cancelled): what was sent is unknown, so the connection
            # cannot be reused.
            await self._drop(writer)
            raise

    async def _drop(self, writer: asyncio.StreamWriter) -> None:
        # Aborted, not closed: a close would keep the socket open until a server that reads
        # nothing took the unsent rest.
        writer.transport.abort()
        await self.disconnect(nowait=True)


_made: dict[type[Any], type[Any]] = {}


def prompt_writes(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` (redis-py's, or one of the user's) with prompt writes: one class
    for each, so that two queues' connections to one server are of one class."""
    if issubclass(connection_class, _PromptWrites) or (
        # A class that writes in its own way (a user's subclass) is left to do so.
        connection_class.send_packed_command is not AbstractConnection.send_packed_command
    ):
        return connection_class
    made = _made.get(connection_class)
    if made is None:
        made = _made[connection_class] = type(
            connection_class.__name__, (_PromptWrites, connection_class), {}
        )
    return made
