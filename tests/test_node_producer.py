"""A producer in another language: tests/node/enqueue.mjs, a Node.js script written from
docs/wire-format.md alone (its own packing, reading and calling code, node-redis as its only
dependency), enqueues jobs that a Python worker runs, and reads their results.

Skipped only when ``node`` is not on PATH; anything else that goes wrong (npm install
included) fails the test.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio

import queue_async as qa
from queue_async.embedded import EmbeddedServer
from tests.helpers import FAST

pytestmark = pytest.mark.anyio

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "enqueue.mjs"
HEADERS = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tenant": "zürich ✓",
}


@pytest.fixture(scope="session")
def node_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with node-redis installed (the version tests/node/package.json pins)."""
    if shutil.which("node") is None:
        pytest.skip("node not on PATH: the Node.js producer test needs Node.js")
    npm = shutil.which("npm")
    assert npm is not None, "node is on PATH but npm is not: cannot install node-redis"
    version = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["redis"]
    prefix = tmp_path_factory.mktemp("node")
    shutil.copy(NODE_DIR / "package.json", prefix / "package.json")
    proc = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"redis@{version}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"npm install failed ({proc.returncode}):\n{proc.stderr}"
    return prefix


async def node(prefix: Path, request: dict[str, Any], *, expect: int = 0) -> dict[str, Any]:
    """Run enqueue.mjs with one request; its JSON reply."""
    with anyio.fail_after(20):
        proc = await anyio.run_process(
            ["node", str(SCRIPT), json.dumps(request)],
            check=False,
            env={**os.environ, "QA_NODE_PREFIX": str(prefix)},
        )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == expect, f"node exited {proc.returncode}:\n{stderr}"
    reply: dict[str, Any] = json.loads(proc.stdout)
    return reply


def job_id() -> str:
    return f"node-{uuid.uuid4().hex}"


async def test_a_node_producer_enqueues_jobs_and_reads_their_results(
    queue: qa.Queue, redis_url: str, node_prefix: Path
) -> None:
    keys = queue._broker.keys
    seen: dict[str, dict[str, Any]] = {}

    @queue.task(name="node.add")
    async def add(ctx: qa.JobContext, a: int, b: int, *, scale: int = 1, note: str = "") -> Any:
        seen[ctx.job_id] = {
            "args": [a, b],
            "kwargs": {"scale": scale, "note": note},
            "headers": dict(ctx.headers),
            "attempt": ctx.attempt,
        }
        return {"sum": (a + b) * scale, "note": note}

    base = {"url": redis_url, "prefix": "qa", "queue": queue.name}
    first, unknown, later, fresh = job_id(), job_id(), job_id(), job_id()
    assert await queue.client.get(keys.entry) is None

    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            while (entry := await queue.client.get(keys.entry)) is None:
                await anyio.sleep(0.02)
            assert re.fullmatch(
                rb"fcall queue_async_[0-9a-f]{16}_enqueue|evalsha [0-9a-f]{40}", entry
            )

            # A job with an explicit id, a priority, retries and headers; and one for a task
            # no worker has, which ends dead with the error text.
            out = await node(
                node_prefix,
                {
                    **base,
                    "jobs": [
                        {
                            "id": first,
                            "task": "node.add",
                            "args": [2, 3],
                            "kwargs": {"scale": 10, "note": "héllo ☃"},
                            "options": {"priority": 3, "retries": 2, "headers": HEADERS},
                        },
                        {"id": unknown, "task": "node.nobody", "args": [], "kwargs": {}},
                    ],
                    "wait": True,
                },
            )
            assert out["entry"] == entry.decode()
            assert out["replies"] == [1, 1]
            done, dead = out["final"]
            assert done["state"] == "done"
            assert done["result"] == {"sum": 50, "note": "héllo ☃"}
            assert (done["task"], done["attempts"], done["priority"], done["retries"]) == (
                "node.add",
                1,
                3,
                2,
            )
            assert done["headers"] == HEADERS
            assert done["finished"] >= done["started"] >= done["enqueued"]
            assert seen[first] == {
                "args": [2, 3],
                "kwargs": {"scale": 10, "note": "héllo ☃"},
                "headers": HEADERS,
                "attempt": 1,
            }
            assert dead["state"] == "dead"
            assert "'node.nobody' is not registered" in dead["error"]

            # The same id again: the existing job is left alone.
            again = {"id": first, "task": "node.add", "args": [0, 0], "kwargs": {}}
            assert (await node(node_prefix, {**base, "jobs": [again]}))["replies"] == [0]

            # A delayed job is scheduled, then runs once it is due.
            delayed = {
                "id": later,
                "task": "node.add",
                "args": [1, 1],
                "kwargs": {},
                "options": {"delay": 600},
            }
            out = await node(node_prefix, {**base, "jobs": [delayed], "wait": True})
            (scheduled,), (ran,) = out["first"], out["final"]
            assert scheduled["state"] == "scheduled"
            assert scheduled["due"] - scheduled["enqueued"] == 600
            assert (ran["state"], ran["result"]) == ("done", {"sum": 2, "note": ""})
            assert ran["started"] >= scheduled["due"]
            assert seen[later]["headers"] == {}

            # A malformed batch is refused with the script's error text; nothing is added.
            # (byte: where the field that cannot be read starts.)
            valid = "7:valid-10:8:node.add7:[[],{}]"
            for raw, byte in [
                ("9:abc", 1),  # a length past the end
                ("3:abc", 6),  # one field of four
                (f"{len(unknown)}:{unknown}0:8:node.add", 53),  # no payload
                (valid + "7:valid-2", len(valid) + 10),  # a whole job, then a broken one
            ]:
                out = await node(node_prefix, {**base, "raw": raw}, expect=2)
                assert out["error"] == f"ERR queue_async: malformed job batch at byte {byte}"
            assert await queue.client.hlen(keys.fresh) == 0
            assert not await queue.client.exists(keys.job("valid-1"))
            worker.stop()

    # With no worker running, a plain job is stored as a fresh record; the Node.js reader
    # reads that form, and so does Python.
    out = await node(
        node_prefix,
        {
            **base,
            "jobs": [
                {
                    "id": fresh,
                    "task": "node.add",
                    "args": [4, 5],
                    "kwargs": {"note": "fresh"},
                    "options": {"headers": {"tenant": "t-1"}},
                }
            ],
        },
    )
    (record,) = out["first"]
    assert await queue.client.hexists(keys.fresh, fresh)
    assert (record["form"], record["state"], record["attempts"]) == ("fresh", "ready", 0)
    assert (record["args"], record["kwargs"], record["headers"]) == (
        [4, 5],
        {"note": "fresh"},
        {"tenant": "t-1"},
    )
    info = await queue.job(fresh).info()
    assert (info.status, info.args, info.kwargs, info.headers) == (
        qa.JobStatus.READY,
        [4, 5],
        {"note": "fresh"},
        {"tenant": "t-1"},
    )

    worker = qa.Worker(queue, **FAST)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(worker.run, handle_signals=False))
            out = await node(
                node_prefix, {**base, "jobs": [{"id": fresh}], "enqueue": False, "wait": True}
            )
            (ran,) = out["final"]
            assert (ran["form"], ran["state"], ran["result"]) == (
                "hash",
                "done",
                {"sum": 9, "note": "fresh"},
            )
            assert await queue.job(fresh).result(timeout=5) == {"sum": 9, "note": "fresh"}
            assert seen[fresh]["headers"] == {"tenant": "t-1"}
            worker.stop()


async def test_a_node_producer_calls_enqueue_by_evalsha_where_functions_are_denied(
    private_server: EmbeddedServer, node_prefix: Path
) -> None:
    # A worker whose user may not run functions publishes "evalsha <sha1>"; the Node.js
    # producer (as the default user) calls the script by its SHA-1 instead.
    admin = redis.asyncio.Redis.from_url(private_server.url)
    await admin.acl_setuser(
        "nofunctions",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-fcall", "-fcall_ro", "-function"],
    )
    await admin.aclose()
    url = private_server.url.replace("redis://", "redis://nofunctions:secret@", 1)
    queue = qa.Queue(url, name="evalsha")

    @queue.task(name="node.echo")
    async def echo(ctx: qa.JobContext, text: str) -> dict[str, Any]:
        return {"text": text, "headers": dict(ctx.headers)}

    keys = queue._broker.keys
    worker = qa.Worker(queue, **FAST)
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(worker.run, handle_signals=False))
                while (entry := await queue.client.get(keys.entry)) is None:
                    await anyio.sleep(0.02)
                assert re.fullmatch(rb"evalsha [0-9a-f]{40}", entry)
                job = {
                    "id": job_id(),
                    "task": "node.echo",
                    "args": ["ünïcode"],
                    "kwargs": {},
                    "options": {"headers": HEADERS},
                }
                out = await node(
                    node_prefix,
                    {"url": private_server.url, "queue": "evalsha", "jobs": [job], "wait": True},
                )
                assert (out["entry"], out["replies"]) == (entry.decode(), [1])
                (ran,) = out["final"]
                assert (ran["state"], ran["result"]) == (
                    "done",
                    {"text": "ünïcode", "headers": HEADERS},
                )
                worker.stop()
    finally:
        await queue.close()
