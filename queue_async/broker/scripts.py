"""Loads the Lua scripts in lua/ once, and gives each one a typed async method.

A script is one file in ``lua/``, named after its transition. The helpers the scripts share
are units in ``lua/includes/`` (as BullMQ's ``includes/``), each declaring in its header the
units it needs (``-- needs: keys, packed``), as each script declares the units it uses. A
directory rather than a ``_`` prefix, so that every file of ``lua/`` is a script and a unit's
name is plainly its file's. The needs are resolved here, each unit once and after every unit
it needs; a cycle or an unknown unit fails the import, so no broken script reaches a server.

On Redis 7+ and Valkey, all scripts are one function library (FUNCTION LOAD), called with
FCALL: every unit once, then each script as a function, so the helpers are defined when the
library loads, not on every call. A server without functions (Redis 5 and 6), or a user whose
ACL denies them, gets each script by EVALSHA instead, as the units it needs followed by its
own file. Either way, a server that lost them (restart, FUNCTION FLUSH, SCRIPT FLUSH) gets the
source again on the next call.

On a cluster, a script runs on the master of its queue's slot (the cluster client routes FCALL
and EVALSHA by their keys), so the library is loaded on every master, one by one, whenever one
of them lacks it (a new or restarted node); a promoted replica has it already, as masters
replicate FUNCTION LOAD and SCRIPT LOAD. No script leaves its queue's slot. Behind Sentinel
the client is one server's: a promoted replica that lacks the library (it was loaded just
before the old master died) answers "function not found" and gets it as a restarted server
does (tests/sentinel/).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from queue_async.broker.connections import AnyRedis
from queue_async.broker.durability import (
    Command,
    Unconfirmed,
    send_as_is,
    send_confirmed,
)
from queue_async.broker.errors import translate_errors
from queue_async.broker.keys import QueueKeys
from queue_async.broker.wire import as_text, pack_fields
from queue_async.options import Durability

Arg = str | bytes | int

_LUA = resources.files("queue_async.broker") / "lua"
_INCLUDES = _LUA / "includes"
_NEEDS = re.compile(r"-- needs:(.*)")
_RESUME_STEP = 1000  # held jobs resume.lua lets go per call


class LuaDependencyError(RuntimeError):
    """A script or unit needs a unit that does not exist, or units need each other in a
    cycle: a mistake in lua/, found when the scripts are loaded."""


def header(source: str) -> list[str]:
    """The leading comment lines of a Lua file."""
    lines = []
    for line in source.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return lines


def declared_needs(name: str, source: str) -> tuple[str, ...]:
    """The units named on the ``-- needs:`` line of a file's header (one line, perhaps
    empty)."""
    found = [m.group(1) for line in header(source) if (m := _NEEDS.fullmatch(line))]
    if len(found) != 1:
        raise LuaDependencyError(
            f"{name}: its header needs exactly one '-- needs: unit, ...' line, has {len(found)}"
        )
    return tuple(part.strip() for part in found[0].split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class LuaUnit:
    """Helpers shared by scripts: one file of lua/includes/."""

    name: str
    source: str
    needs: tuple[str, ...]

    @classmethod
    def read(cls, file: Traversable) -> LuaUnit:
        name = file.name.removesuffix(".lua")
        source = file.read_text()
        return cls(name, source, declared_needs(f"includes/{file.name}", source))


def in_dependency_order(
    requester: str, needs: Iterable[str], units: Mapping[str, LuaUnit]
) -> list[str]:
    """``needs`` and every unit they need, transitively, each once and after every unit it
    needs; in a stable order (depth first, in the order the needs are declared)."""
    order: list[str] = []
    placed: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in placed:
            return
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise LuaDependencyError(f"Lua units need each other in a cycle: {cycle}")
        if name not in units:
            raise LuaDependencyError(
                f"{path[-1] if path else requester} needs the unit {name!r}, which is not in "
                f"lua/includes/ (units: {', '.join(sorted(units))})"
            )
        for need in units[name].needs:
            visit(need, (*path, name))
        placed.add(name)
        order.append(name)

    for name in needs:
        visit(name, ())
    return order


def _load_units() -> dict[str, LuaUnit]:
    return {
        unit.name: unit
        for unit in sorted(
            (LuaUnit.read(f) for f in _INCLUDES.iterdir() if f.name.endswith(".lua")),
            key=lambda unit: unit.name,
        )
    }


UNITS = _load_units()


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: str
    """The units the script needs and the script, for EVAL and EVALSHA."""
    sha: str
    body: str
    """The script's own file."""
    needs: tuple[str, ...]
    """The units its header declares."""
    units: tuple[str, ...]
    """The units its source holds: its needs and theirs, in dependency order."""

    @classmethod
    def load(cls, name: str, units: Mapping[str, LuaUnit] = UNITS) -> LuaScript:
        body = (_LUA / f"{name}.lua").read_text()
        needs = declared_needs(f"{name}.lua", body)
        order = in_dependency_order(f"{name}.lua", needs, units)
        source = "\n".join([*(units[unit].source for unit in order), body])
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        return cls(name, source, sha, body, needs, tuple(order))


# Every lua/*.lua is a script, named after its file.
SCRIPTS = {
    name: LuaScript.load(name)
    for name in sorted(
        entry.name.removesuffix(".lua") for entry in _LUA.iterdir() if entry.name.endswith(".lua")
    )
}


@dataclass(frozen=True, slots=True)
class FunctionLibrary:
    """Every script as a function of one library, named after a hash of its source, so that
    two versions of queue_async on one server each call their own."""

    name: str
    source: str
    units: tuple[str, ...]
    """The units at the library's top level, once each, in dependency order."""

    @classmethod
    def build(
        cls, scripts: Mapping[str, LuaScript], units: Mapping[str, LuaUnit] = UNITS
    ) -> FunctionLibrary:
        names = sorted(scripts)
        order = in_dependency_order(
            "the function library", [need for s in names for need in scripts[s].needs], units
        )
        shared = [units[unit].source for unit in order]
        bodies = [scripts[script].body for script in names]
        digest = hashlib.sha1(
            "\n".join([*shared, *bodies]).encode(), usedforsecurity=False
        ).hexdigest()[:16]
        name = f"queue_async_{digest}"
        # The callback's parameters take the names the scripts use for EVAL's globals.
        functions = [
            f"redis.register_function('{name}_{script}', function(KEYS, ARGV)\n{body}\nend)"
            for script, body in zip(names, bodies, strict=True)
        ]
        return cls(name, "\n".join([f"#!lua name={name}", *shared, *functions]), tuple(order))

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
    "pause": "pausing the queue or a task",
    "resume": "resuming the queue or a task",
    "set_limits": "setting a task's limits",
    "checkin": "recording a check-in",
    "recover": "recovering expired leases",
    "watch": "starting to wait for a job's result",
    "read": "reading jobs",
    "browse": "listing jobs",
    "retry": "retrying jobs",
    "promote": "running scheduled jobs early",
    "delete": "deleting jobs",
    "stats": "reading queue stats",
    "record_crons": "recording the worker's cron schedules",
}


def _functions_unavailable(exc: redis.exceptions.ResponseError) -> bool:
    """FCALL or FUNCTION LOAD refused: an older server, or an ACL that denies them."""
    return isinstance(exc, redis.exceptions.NoPermissionError) or "unknown command" in str(exc)


def _already_loaded(exc: Exception) -> bool:
    """FUNCTION LOAD refused because the server has our library (another client loaded it)."""
    return "already exists" in str(exc)


class Scripts:
    """The transitions of one queue, each one atomic Lua script."""

    def __init__(
        self, client: AnyRedis, keys: QueueKeys, durability: Durability | None = None
    ) -> None:
        self.client = client
        self.keys = keys
        self.durability = durability
        """What the writes that make or finish jobs wait for (enqueue, complete, fail); see
        durability.py. A call that got less raises ``Unconfirmed`` with its reply."""
        self.functions: bool | None = None
        """Whether the server runs our function library; None until the first call."""

    async def _call(
        self, script: LuaScript, keys: list[str], args: list[Arg], *, durable: bool = False
    ) -> Any:
        with translate_errors(DOING.get(script.name, script.name)):
            if durable and self.durability is not None:
                return await self._call_confirmed(script, keys, args, self.durability)
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
                # The server lost its scripts (restart, SCRIPT FLUSH): load them all again, so
                # that the enqueue a producer in another language calls by its published sha
                # comes back too, not only the script this worker calls.
                await self._load_scripts()
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)

    async def _call_confirmed(
        self, script: LuaScript, keys: list[str], args: list[Arg], durability: Durability
    ) -> Any:
        """``_call`` followed by WAIT on the same connection, in the same round trip."""
        for _ in range(3):
            command: Command
            if self.functions is not False:
                command = ("FCALL", LIBRARY.function(script), len(keys), *keys, *args)
            else:
                command = ("EVALSHA", script.sha, len(keys), *keys, *args)
            (reply,), confirmation = await send_confirmed(
                self.client, durability, keys[0], [command]
            )
            if isinstance(reply, redis.exceptions.NoScriptError):
                await self._load_scripts()
                continue
            if isinstance(reply, redis.exceptions.ResponseError) and (
                "function not found" in str(reply).lower() or _functions_unavailable(reply)
            ):
                await self._load_library()
                continue
            if isinstance(reply, Exception):
                raise reply
            if not confirmation.enough(durability):
                raise Unconfirmed(reply, confirmation, durability)
            return reply
        raise reply  # the scripts went missing again after each load

    async def _load_scripts(self) -> None:
        """SCRIPT LOAD every script (on a cluster, redis-py sends it to every master)."""
        if isinstance(self.client, RedisCluster):
            for each in SCRIPTS.values():
                await self.client.script_load(each.source)
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for each in SCRIPTS.values():
                pipe.script_load(each.source)
            await pipe.execute()

    async def _load_library(self) -> bool:
        """Load our function library unless the server has it; False if it cannot run
        functions (then every call goes by EVALSHA). On a cluster, on every master."""
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()
            masters = self.client.get_primaries()
            replies = await asyncio.gather(
                *(
                    self.client.execute_command(
                        "FUNCTION LOAD", LIBRARY.source, target_nodes=master
                    )
                    for master in masters
                ),
                return_exceptions=True,
            )
        else:
            try:
                replies = [await self.client.function_load(LIBRARY.source)]
            except redis.exceptions.ResponseError as exc:
                replies = [exc]
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                if _functions_unavailable(reply):
                    self.functions = False
                    return False
                if not _already_loaded(reply):
                    raise reply
            elif isinstance(reply, BaseException):
                raise reply
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

    async def enqueue(self, jobs: bytes, *, watched: bool = False) -> list[int | bytes]:
        """Enqueue packed jobs (see enqueue.lua); ``watched`` flags the new ones as awaited.

        One reply per job: 1 new, 0 its id existed, or the id holding its unique key.
        """
        args: list[Arg] = [self.keys.prefix, jobs, "1"] if watched else [self.keys.prefix, jobs]
        result: list[int | bytes] = await self._call(
            SCRIPTS["enqueue"], self._enqueue_keys(), args, durable=True
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
        inside EXEC would fail alone while the other chunks committed. A cluster's MULTI
        takes only commands of the queue's slot (no FUNCTION LOAD), so there each chunk is an
        EVAL of the source, which cannot find its script missing.
        """
        script = SCRIPTS["enqueue"]
        keys = self._enqueue_keys()
        call: Callable[..., Any]
        if self.durability is not None or isinstance(self.client, RedisCluster):
            return await self._enqueue_chunks_sent_as_is(chunks, self.durability)
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

    async def _enqueue_chunks_sent_as_is(
        self, chunks: list[bytes], durability: Durability | None
    ) -> list[int | bytes]:
        """``enqueue_chunks`` as MULTI, an EVAL of the source per chunk (which cannot find its
        script missing inside EXEC), EXEC, then (with ``durability``) WAIT, in one round trip,
        on one connection: on a cluster, to the master of the queue's slot."""
        source, keys = SCRIPTS["enqueue"].source, self._enqueue_keys()
        commands: list[Command] = [("MULTI",)]
        commands += [("EVAL", source, len(keys), *keys, self.keys.prefix, c) for c in chunks]
        commands.append(("EXEC",))
        with translate_errors("enqueueing a batch of jobs"):
            confirmation = None
            if durability is None:
                replies = await send_as_is(self.client, keys[0], commands)
            else:
                replies, confirmation = await send_confirmed(
                    self.client, durability, keys[0], commands
                )
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            executed = replies[-1]
            if executed is None:  # EXEC aborted (a command refused while queued)
                raise redis.exceptions.ResponseError("the enqueue transaction was aborted")
            for reply in executed:
                if isinstance(reply, Exception):
                    raise reply
        flags: list[int | bytes] = [flag for reply in executed for flag in reply]
        if (
            durability is not None
            and confirmation is not None
            and not confirmation.enough(durability)
        ):
            raise Unconfirmed(flags, confirmation, durability)
        return flags

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
        *,
        slots: int | None = None,
    ) -> list[Any]:
        """Take up to ``count`` jobs; the reply is described in lease.lua.

        ``max_idle_ms`` > 0 registers the worker as idle if nothing is left to take, for
        the free ``slots`` (before this lease) that it leaves, up to ``count``, when given;
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
                *([] if slots is None else [slots]),
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

    async def complete(
        self, fields: list[Arg], *, idle: tuple[str, int, int, int, int] | None = None
    ) -> list[int]:
        """Record jobs done, four fields each: id, token, result, keep ms.

        ``idle``: the finishing worker's id, free slots, lease, lease grace and longest idle
        wait (ms), to register it as idle for hand-offs (see complete.lua).
        One flag per job: 1 recorded, 0 lease lost, 2 the job is gone (see complete.lua).
        """
        k = self.keys
        keys = [k.active, k.meta, k.ready, k.wake, k.done]
        # One argument for the jobs: redis-py packs each argument at about 1 us.
        args: list[Arg] = [k.prefix, pack_fields(fields)]
        if idle is not None:
            keys.append(k.idle)
            args += idle
        result: list[int] = await self._call(SCRIPTS["complete"], keys, args, durable=True)
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
            durable=True,
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
        await self._call(SCRIPTS["pause"], [self.keys.gates], [task])

    async def resume(self, task: str) -> int:
        """Resume the queue (task "") or one task; returns how many held jobs were let go.

        A task's held jobs go back 1,000 per call (see resume.lua), so one call never holds
        the server for long however many there are.
        """
        moved = 0
        while True:
            step = await self.resume_step(task)
            moved += step
            if not task or step < _RESUME_STEP:
                return moved

    async def resume_step(self, task: str) -> int:
        """One bounded step of ``resume``: how many held jobs it let go."""
        k = self.keys
        moved: int = await self._call(SCRIPTS["resume"], [k.ready, k.wake], [k.prefix, task])
        return moved

    async def set_limits(self, task: str, max_concurrency: str, rate: str) -> int:
        """Set a task's max concurrency and rate ("<jobs>:<period ms>"); "" for none."""
        k = self.keys
        moved: int = await self._call(
            SCRIPTS["set_limits"], [k.ready, k.wake], [k.prefix, task, max_concurrency, rate]
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

    async def browse(
        self,
        state: str,
        order: str,
        cursor: str,
        limit: int,
        budget: int,
        task: str,
        search: str,
    ) -> list[Any]:
        """A page of a state's jobs (see browse.lua): [cursor, scanned, id, job, ...].
        ``state``: ready, scheduled, active, dead or done (the name of its index key)."""
        keys = self.keys
        index = {
            "ready": keys.ready,
            "scheduled": keys.scheduled,
            "active": keys.active,
            "dead": keys.dead,
            "done": keys.done,
        }[state]
        reply: list[Any] = await self._call(
            SCRIPTS["browse"],
            [index, keys.fresh],
            [keys.prefix, state, order, cursor, limit, budget, task, search],
        )
        return reply

    async def retry(
        self,
        at_ms: int,
        cursor: str,
        limit: int,
        budget: int,
        task: str,
        search: str,
        job_ids: list[str],
    ) -> tuple[int, str, int]:
        """Requeue dead (or retrying) jobs in place (see retry.lua): the named ones, or
        those a walk of the dead set finds. (requeued, cursor, entries looked at)."""
        k = self.keys
        count, next_cursor, scanned = await self._call(
            SCRIPTS["retry"],
            [k.dead, k.scheduled, k.retrying, k.ready, k.wake, k.seq, k.fresh],
            [k.prefix, at_ms, cursor, limit, budget, task, search, *job_ids],
        )
        return int(count), as_text(next_cursor), int(scanned)

    async def promote(self, ahead_ms: int, limit: int) -> int:
        """Make the scheduled jobs due within ``ahead_ms`` ready now, at most ``limit`` (see
        promote.lua); the number moved."""
        k = self.keys
        moved: int = await self._call(
            SCRIPTS["promote"], [k.scheduled, k.ready, k.seq, k.wake], [k.prefix, ahead_ms, limit]
        )
        return int(moved)

    async def delete(
        self,
        state: str,
        cursor: str,
        limit: int,
        budget: int,
        task: str,
        search: str,
        job_ids: list[str],
    ) -> tuple[int, str, int]:
        """Delete jobs that are not running (see delete.lua): the named ones, or those a walk
        of one state's index finds. (deleted, cursor, entries looked at)."""
        k = self.keys
        count, next_cursor, scanned = await self._call(
            SCRIPTS["delete"],
            [k.ready, k.scheduled, k.retrying, k.dead, k.done, k.fresh],
            [k.prefix, state, cursor, limit, budget, task, search, *job_ids],
        )
        return int(count), as_text(next_cursor), int(scanned)

    async def read(self, job_ids: list[str], names: str) -> list[bytes | list[bytes] | None]:
        """Many jobs in one call (see read.lua): per job None, its fresh record, or its
        fields (``names`` "": HGETALL's flat list; otherwise HMGET's values of those names)."""
        keys = self.keys
        jobs: list[bytes | list[bytes] | None] = await self._call(
            SCRIPTS["read"],
            [keys.fresh, *(keys.job(job_id) for job_id in job_ids)],
            [names, *job_ids],
        )
        return jobs

    async def watch(self, job_id: str) -> str | None:
        """Flag a job as awaited; returns its state, or None if it does not exist."""
        return (await self.watch_many([job_id]))[0]

    async def watch_many(self, job_ids: list[str]) -> list[str | None]:
        """Flag jobs as awaited; per job its state, or None if it does not exist."""
        keys = self.keys
        states: list[bytes | None] = await self._call(
            SCRIPTS["watch"], [keys.job(job_id) for job_id in job_ids], [keys.prefix, *job_ids]
        )
        return [None if state is None else state.decode() for state in states]

    async def stats(self) -> list[Any]:
        """The queue's counts, latency and counters as of one moment (see stats.lua)."""
        k = self.keys
        reply: list[Any] = await self._call(
            SCRIPTS["stats"],
            [
                k.ready,
                k.scheduled,
                k.retrying,
                k.active,
                k.dead,
                k.meta,
                k.workers,
                k.gates,
                k.gated,
                k.fresh,
            ],
            [k.prefix],
        )
        return reply

    async def record_crons(self, forget_ms: int, schedules: list[Arg]) -> int:
        """Record the schedules a worker runs (name, JSON pairs) and drop those no worker
        recorded for ``forget_ms`` and no live worker runs. Returns how many were dropped."""
        k = self.keys
        dropped: int = await self._call(
            SCRIPTS["record_crons"], [k.crons, k.workers], [k.prefix, forget_ms, *schedules]
        )
        return dropped
