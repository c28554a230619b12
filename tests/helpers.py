"""Small tools shared by tests."""

from __future__ import annotations

from typing import Any

import anyio

import queue_async as qa

# Fast enough for tests, still real: leases and heartbeats as a user could configure them.
FAST: dict[str, Any] = {
    "lease": 2.0,
    "heartbeat": 0.5,
    "max_idle_wait": 0.5,
    "shutdown_grace": 2.0,
}


async def drain(queue: qa.Queue, *, limit: float = 20.0, **settings: Any) -> qa.Worker:
    """Run a worker in burst mode until the queue has nothing ready or scheduled."""
    worker = qa.Worker(queue, **{**FAST, **settings})
    with anyio.fail_after(limit):
        await worker.run(burst=True, handle_signals=False)
    return worker


async def keys_of(queue: qa.Queue) -> set[str]:
    """Every key of the queue that exists now."""
    return {key.decode() async for key in queue.client.scan_iter(match=f"{queue.keys.prefix}*")}
