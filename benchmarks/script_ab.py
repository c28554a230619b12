"""Server time of the hot scripts, one checkout against another, interleaved on one server.

    python benchmarks/script_ab.py OLD_TREE NEW_TREE [--rounds N]

Each tree is a checkout of this repository (e.g. ``git worktree add /tmp/old <rev>``). Both
function libraries are loaded into one private server; each round enqueues 1,000 plain jobs,
leases them (10 calls of 100) and completes them (10 calls), alternating which tree goes
first, and reads the server's own time per call (INFO commandstats). The medians are what to
compare: the server is single-threaded, so client noise does not enter them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from pathlib import Path

import redis.asyncio

from queue_async.broker.wire import pack_fields, pack_job
from queue_async.embedded import EmbeddedServer

_DUMP = """
import json
try:
    from queue_async.broker.scripts import LIBRARY, SCRIPTS
    from queue_async.broker.wire import LEASED_FIELDS
except ImportError:  # the flat layout before queue_async/broker/
    from queue_async._scripts import LIBRARY, SCRIPTS
    LEASED_FIELDS = 9
names = {n: LIBRARY.function(SCRIPTS[n]) for n in ("enqueue", "lease", "complete")}
print(json.dumps({"source": LIBRARY.source, "functions": names, "width": LEASED_FIELDS}))
"""


def library_of(tree: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _DUMP],
        cwd=tree,
        env={"PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    loaded: dict[str, object] = json.loads(out.stdout)
    return loaded


async def server_usec(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_fcall", {}).get("usec", 0))


async def one_round(client: redis.asyncio.Redis, lib: dict[str, object], tag: str) -> list[int]:
    fn: dict[str, str] = lib["functions"]  # type: ignore[assignment]
    width: int = lib["width"]  # type: ignore[assignment]
    prefix = f"ab:{{{tag}}}:"

    def k(name: str) -> str:
        return prefix + name

    batch = b"".join(pack_job(f"j{i}", b"", "t", b"[[1],{}]") for i in range(1000))
    await client.config_resetstat()
    await client.fcall(
        fn["enqueue"],
        6,
        k("ready"),
        k("scheduled"),
        k("wake"),
        k("seq"),
        k("idle"),
        k("active"),
        prefix,
        batch,
    )
    enqueue = await server_usec(client)
    await client.config_resetstat()
    lease_keys = [k(n) for n in ("ready", "scheduled", "active", "wake", "seq", "dead", "idle")]
    lease_args = [prefix, 100, 30000, "L", "w", 3, 600000, 100, 0, 20000]
    replies = [await client.fcall(fn["lease"], 7, *lease_keys, *lease_args) for _ in range(10)]
    lease = await server_usec(client)
    await client.config_resetstat()
    for reply in replies:
        jobs = reply[3:]
        fields: list[bytes | str | int] = []
        for b in range(0, len(jobs), width):
            fields += [jobs[b], jobs[b + 8], b"1", 60000]  # id and token: places 0 and 8 in both
        # KEYS[5] (done) since the done listing; an older complete.lua ignores it.
        await client.fcall(
            fn["complete"],
            5,
            k("active"),
            k("meta"),
            k("ready"),
            k("wake"),
            k("done"),
            prefix,
            pack_fields(fields),
        )
    complete = await server_usec(client)
    await client.flushall()
    return [enqueue, lease, complete]


async def main(old: Path, new: Path, rounds: int) -> None:
    libs = {"old": library_of(old), "new": library_of(new)}
    with EmbeddedServer() as server:
        client = redis.asyncio.Redis.from_url(server.url)
        for lib in libs.values():
            await client.function_load(str(lib["source"]))
        times: dict[str, list[list[int]]] = {"old": [], "new": []}
        for n in range(rounds):
            for side in ("old", "new") if n % 2 else ("new", "old"):
                times[side].append(await one_round(client, libs[side], f"{side}{n}"))
        await client.aclose()
    for side, rows in times.items():
        warm = rows[4:]
        medians = [statistics.median(col) for col in zip(*warm, strict=True)]
        print(
            json.dumps(
                {
                    "tree": side,
                    "enqueue_us_per_1000_jobs": medians[0],
                    "lease_us_per_1000_jobs": medians[1],
                    "complete_us_per_1000_jobs": medians[2],
                }
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.old, args.new, args.rounds))
