"""A worker subprocess for tests: ``python -m tests.apps.worker [lease] [grace]``.

Short lease and heartbeat so that a killed worker's jobs come back quickly.
"""

from __future__ import annotations

import logging
import sys

import anyio

import queue_async as qa
from tests.apps.tasks import queue


async def main() -> None:
    lease = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    grace = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    worker = qa.Worker(
        queue,
        concurrency=10,
        lease=lease,
        heartbeat=lease / 4,
        shutdown_grace=grace,
        max_idle_wait=0.5,
    )
    await queue.client.rpush(f"{queue._broker.keys.prefix}test:workers-up", worker.id)
    await worker.run()
    await queue.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    anyio.run(main)
