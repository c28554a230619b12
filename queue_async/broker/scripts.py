"""Loads the Lua scripts in lua/ once, and gives each one a typed async method.

Each script is the shared ``lua/_lib.lua``, ``_gates.lua`` and ``_enqueue.lua`` (the
prelude) followed by the script's own file. On Redis 7+ and Valkey, all of them are one
function library (FUNCTION LOAD), called with FCALL: the prelude's helpers are defined once
when the library loads, not on every call, which saves about 5 us per call on a warm server
and 20 us on an idle one. A server without functions (Redis 5 and 6), or a user whose ACL
denies them, gets the same scripts by EVALSHA instead. Either way, a server that lost them
(restart, FUNCTION FLUSH, SCRIPT FLUSH) gets the source again on the next call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio
import redis.exceptions

from queue_async.broker.errors import translate_errors
from queue_async.broker.keys import QueueKeys
from queue_async.broker.wire import pack_fields

Arg = str | bytes | int

_PRELUDE = ("_lib.lua", "_gates.lua", "_enqueue.lua")
_RESUME_STEP = 1000  # held jobs gate.lua lets go per resume call


def _lua(part: str) -> str:
    return (resources.files("queue_async.broker") / "lua" / part).read_text()


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: str
    """The prelude and the script, for EVAL and EVALSHA."""
    sha: str
    body: str
    """The script's own file."""

    @classmethod
    def load(cls, name: str) -> LuaScript:
        body = _lua(f"{name}.lua")
        source = "\n".join([*(_lua(part) for part in _PRELUDE), body])
        return cls(
            name, source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest(), body
        )


# Every lua/*.lua except the shared _lib.lua is a script, named after its file.
SCRIPTS = {
    entry.name.removesuffix(".lua"): LuaScript.load(entry.name.removesuffix(".lua"))
    for entry in (resources.files("queue_async.broker") / "lua").iterdir()
    if entry.name.endswith(".lua") and not entry.name.startswith("_")
}


@dataclass(frozen=True, slots=True)
class FunctionLibrary:
    """Every script as a function of one library, named after a hash of its source, so that
    two versions of queue_async on one server each call their own."""

    name: str
    source: str

    @classmethod
    def build(cls, scripts: dict[str, LuaScript]) -> FunctionLibrary:
        prelude = "\n".join(_lua(part) for part in _PRELUDE)
        bodies = [scripts[name].body for name in sorted(scripts)]
        digest = hashlib.sha1(
            "\n".join([prelude, *bodies]).encode(), usedforsecurity=False
        ).hexdigest()[:16]
        name = f"queue_async_{digest}"
        # The callback's parameters take the names the scripts use for EVAL's globals.
        functions = [
            f"redis.register_function('{name}_{script}', function(KEYS, ARGV)\n{body}\nend)"
            for script, body in zip(sorted(scripts), bodies, strict=True)
        ]
        return cls(name, "\n".join([f"#!lua name={name}", prelude, *functions]))

    def function(self, script: LuaScript) -> str:
        return f"{self.name}_{script.name}"


LIBRARY = FunctionLibrary.build(SCRIPTS)


# What each script does, in the words of an error message: "... while enqueueing a job".
DOING = {
    "enqueue": "enqueueing a job",
    "lease": "leasing jobs",
    "complete": "recording finished jobs",
    "fail": "recording a failed try",
    "release": "handing jobs back to the queue",
    "retire": "leaving the idle rotation",
    "extend": "extending leases (heartbeat)",
    "cancel": "cancelling a job",
    "cron": "enqueueing a cron tick",
    "gate": "changing a pause or limit",
    "checkin": "recording a check-in",
    "recover": "recovering expired leases",
    "watch": "starting to wait for a job's result",
}


def _functions_unavailable(exc: redis.exceptions.ResponseError) -> bool:
    """FCALL or FUNCTION LOAD refused: an older server, or an ACL that denies them."""
    return isinstance(exc, redis.exceptions.NoPermissionError) or "unknown command" in str(exc)


def _already_loaded(exc: Exception) -> bool:
    """FUNCTION LOAD refused because the server has our library (another client loaded it)."""
    return "already exists" in str(exc)


class Scripts:
    """The transitions of one queue, each one atomic Lua script."""

    def __init__(self, client: redis.asyncio.Redis, keys: QueueKeys) -> None:
        self.client = client
        self.keys = keys
        self.functions: bool | None = None
        """Whether the server runs our function library; None until the first call."""

    async def _call(self, script: LuaScript, keys: list[str], args: list[Arg]) -> Any:
        with translate_errors(DOING.get(script.name, script.name)):
            if self.functions is not False:
                name = LIBRARY.function(script)
                try:
                    return await self.client.fcall(name, len(keys), *keys, *args)
                except redis.exceptions.ResponseError as exc:
                    if not (
                        "function not found" in str(exc).lower() or _functions_unavailable(exc)
                    ):
                        raise
                if await self._load_library():
                    return await self.client.fcall(name, len(keys), *keys, *args)
            try:
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                await self.client.script_load(script.source)
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)

    async def _load_library(self) -> bool:
        """Load our function library unless the server has it; False if it cannot run
        functions (then every call goes by EVALSHA)."""
        try:
            await self.client.function_load(LIBRARY.source)
        except redis.exceptions.ResponseError as exc:
            if _functions_unavailable(exc):
                self.functions = False
                return False
            if not _already_loaded(exc):
                raise
        self.functions = True
        return True

    async def publish_entry(self) -> str:
        """Load the scripts if the server lacks them, and store how to call enqueue in the
        queue's ``entry`` key: "fcall <function>" or "evalsha <sha1>" (docs/wire-format.md).
        Returns the value stored."""
        script = SCRIPTS["enqueue"]
        with translate_errors("publishing the enqueue entry point"):
            if self.functions is not False and await self._load_library():
                entry = f"fcall {LIBRARY.function(script)}"
            else:
                await self.client.script_load(script.source)
                entry = f"evalsha {script.sha}"
            await self.client.set(self.keys.entry, entry)
        return entry

    def _enqueue_keys(self) -> list[str]:
        k = self.keys
        return [k.ready, k.scheduled, k.wake, k.seq, k.idle, k.active]

    async def enqueue(self, jobs: bytes) -> list[int | bytes]:
        """Enqueue packed jobs (see enqueue.lua).

        One reply per job: 1 new, 0 its id existed, or the id holding its unique key.
        """
        result: list[int | bytes] = await self._call(
            SCRIPTS["enqueue"], self._enqueue_keys(), [self.keys.prefix, jobs]
        )
        return result

    def enqueue_into(self, pipeline: redis.asyncio.client.Pipeline, jobs: bytes) -> None:
        """Add an enqueue to the caller's pipeline. EVAL with the source, not EVALSHA: a
        NOSCRIPT inside the caller's transaction would fail this command alone."""
        keys = self._enqueue_keys()
        pipeline.eval(SCRIPTS["enqueue"].source, len(keys), *keys, self.keys.prefix, jobs)

    async def enqueue_chunks(self, chunks: list[bytes]) -> list[int | bytes]:
        """Enqueue several chunks in one MULTI, so the whole batch lands or none of it.

        The scripts are loaded inside the same transaction: a call that found them missing
        inside EXEC would fail alone while the other chunks committed.
        """
        script = SCRIPTS["enqueue"]
        keys = self._enqueue_keys()
        call: Callable[..., Any]
        with translate_errors("enqueueing a batch of jobs"):
            if self.functions is None:
                await self._load_library()
            async with self.client.pipeline(transaction=True) as pipe:
                if self.functions:
                    pipe.function_load(LIBRARY.source)
                    call, name = pipe.fcall, LIBRARY.function(script)
                else:
                    pipe.script_load(script.source)
                    call, name = pipe.evalsha, script.sha
                for chunk in chunks:
                    call(name, len(keys), *keys, self.keys.prefix, chunk)
                replies = await pipe.execute(raise_on_error=False)
            if isinstance(replies[0], Exception) and not _already_loaded(replies[0]):
                raise replies[0]
            for reply in replies[1:]:
                if isinstance(reply, Exception):
                    raise reply
        return [flag for reply in replies[1:] for flag in reply]

    async def lease(
        self,
        count: int,
        lease_ms: int,
        lease_id: str,
        worker_id: str,
        max_stalls: int,
        dead_max_age_ms: int,
        dead_max_len: int,
        max_idle_ms: int,
        grace_ms: int,
    ) -> list[Any]:
        """Take up to ``count`` jobs; the reply is described in lease.lua.

        ``max_idle_ms`` > 0 registers the worker as idle if nothing is left to take;
        ``grace_ms``: how long an expired lease of these jobs is suspected before recovery.
        """
        k = self.keys
        result: list[Any] = await self._call(
            SCRIPTS["lease"],
            [k.ready, k.scheduled, k.active, k.wake, k.seq, k.dead, k.idle],
            [
                k.prefix,
                count,
                lease_ms,
                lease_id,
                worker_id,
                max_stalls,
                dead_max_age_ms,
                dead_max_len,
                max_idle_ms,
                grace_ms,
            ],
        )
        return result

    async def retire(self, worker_id: str) -> int:
        """Leave the idle rotation; hand back jobs left in the inbox. Returns how many."""
        k = self.keys
        result: int = await self._call(
            SCRIPTS["retire"], [k.idle, k.active, k.ready, k.wake, k.seq], [k.prefix, worker_id]
        )
        return result

    async def complete(self, fields: list[Arg]) -> list[int]:
        """Record jobs done, four fields each: id, token, result, keep ms.

        One flag per job: 1 recorded, 0 lease lost, 2 the job is gone (see complete.lua).
        """
        result: list[int] = await self._call(
            SCRIPTS["complete"],
            [self.keys.active, self.keys.meta, self.keys.ready, self.keys.wake],
            # One argument: redis-py packs each argument at about 1 us.
            [self.keys.prefix, pack_fields(fields)],
        )
        return result

    async def fail(
        self,
        job_id: str,
        token: str,
        error: str,
        retry_delay_ms: int,
        dead_max_age_ms: int,
        dead_max_len: int,
        aborted_keep_ms: int = 0,
    ) -> str:
        """Retry after ``retry_delay_ms`` (-1: to dead, -2: aborted).

        Returns "retry", "dead", "aborted" or "lost".
        """
        k = self.keys
        result: bytes = await self._call(
            SCRIPTS["fail"],
            [k.active, k.scheduled, k.ready, k.dead, k.wake, k.seq, k.meta],
            [
                k.prefix,
                job_id,
                token,
                error,
                retry_delay_ms,
                dead_max_age_ms,
                dead_max_len,
                aborted_keep_ms,
            ],
        )
        return result.decode()

    async def release(self, fields: list[Arg]) -> int:
        """Hand jobs back to ready, two fields each: id, token. Returns how many."""
        k = self.keys
        result: int = await self._call(
            SCRIPTS["release"], [k.active, k.ready, k.wake, k.seq], [k.prefix, *fields]
        )
        return result

    async def extend(
        self,
        lease_ms: int,
        worker_id: str,
        heartbeat: bytes,
        heartbeat_ttl_ms: int,
        fields: list[Arg],
    ) -> tuple[list[str], list[str]]:
        """Extend leases (id, token pairs) and store the heartbeat.

        Returns the ids whose lease was lost, and the ids flagged for abort.
        """
        k = self.keys
        lost, aborting = await self._call(
            SCRIPTS["extend"],
            [k.active, k.workers],
            [k.prefix, lease_ms, worker_id, heartbeat, heartbeat_ttl_ms, *fields],
        )
        return [i.decode() for i in lost], [i.decode() for i in aborting]

    async def cancel(self, job_id: str, keep_ms: int, *, abort: bool = False) -> str:
        """Cancel a job that has not started (and with ``abort``, flag a running one).

        Returns its state before the call.
        """
        k = self.keys
        result: bytes = await self._call(
            SCRIPTS["cancel"],
            [k.ready, k.scheduled],
            [k.prefix, job_id, keep_ms, "1" if abort else ""],
        )
        return result.decode()

    async def cron_tick(self, name: str, tick_ms: int, job: bytes) -> bool:
        """Enqueue a cron tick's job (packed) unless this tick (or a later one) already was."""
        keys = [*self._enqueue_keys(), self.keys.cron]
        added: int = await self._call(SCRIPTS["cron"], keys, [self.keys.prefix, name, tick_ms, job])
        return added == 1

    async def pause(self, task: str) -> None:
        """Pause the queue (task "") or one task."""
        await self._gate("pause", task, "", "")

    async def resume(self, task: str) -> int:
        """Resume the queue (task "") or one task; returns how many held jobs were let go.

        A task's held jobs go back 1,000 per call (see gate.lua), so one call never holds
        the server for long however many there are.
        """
        moved = 0
        while True:
            step = await self._gate("resume", task, "", "")
            moved += step
            if not task or step < _RESUME_STEP:
                return moved

    async def set_limits(self, task: str, max_concurrency: str, rate: str) -> int:
        """Set a task's max concurrency and rate ("<jobs>:<period ms>"); "" for none."""
        return await self._gate("limits", task, max_concurrency, rate)

    async def _gate(self, action: str, task: str, max_concurrency: str, rate: str) -> int:
        k = self.keys
        moved: int = await self._call(
            SCRIPTS["gate"], [k.ready, k.wake], [k.prefix, action, task, max_concurrency, rate]
        )
        return moved

    async def checkin(self, job_id: str, token: str, message: str, progress: str) -> bool:
        """Record a running job's message and/or progress; False if the lease was lost."""
        recorded: int = await self._call(
            SCRIPTS["checkin"], [self.keys.job(job_id)], [token, message, progress]
        )
        return recorded == 1

    async def recover(
        self, max_stalls: int, dead_max_age_ms: int, dead_max_len: int
    ) -> tuple[int, int]:
        """Recover expired leases and promote due jobs now. Returns (recovered, promoted)."""
        k = self.keys
        recovered, promoted = await self._call(
            SCRIPTS["recover"],
            [k.ready, k.scheduled, k.active, k.seq, k.dead, k.wake],
            [k.prefix, max_stalls, dead_max_age_ms, dead_max_len],
        )
        return int(recovered), int(promoted)

    async def watch(self, job_id: str) -> str | None:
        """Flag a job as awaited; returns its state, or None if it does not exist."""
        state: bytes | None = await self._call(
            SCRIPTS["watch"], [self.keys.job(job_id)], [self.keys.prefix, job_id]
        )
        return None if state is None else state.decode()
