"""FastAPI apps for tests/test_fastapi.py, served by uvicorn in a subprocess.

``tests.apps.fastapi_app:app`` runs its worker in its lifespan; ``:failing_app`` has a worker
startup hook that raises, so it must not start. The queue comes from the environment:
REDIS_URL and QA_QUEUE.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
from fastapi import FastAPI

import queue_async as qa
from queue_async.contrib.fastapi import job_router, lifespan

queue = qa.Queue(os.environ.get("REDIS_URL"), name=os.environ.get("QA_QUEUE", "fastapi-tests"))


@queue.task(name="web.add")
async def add(a: int, b: int) -> int:
    return a + b


@queue.task(name="web.nap", timeout=None)
async def nap(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "rested"


@queue.task(name="web.boom", retries=0)
async def boom(message: str) -> None:
    raise ValueError(message)


app = FastAPI(lifespan=lifespan(queue, concurrency=100))
app.include_router(job_router(queue, max_wait=1))


@app.get("/add")
async def add_numbers(a: int, b: int) -> int:
    """Enqueue ``add`` and wait for the worker in this process to answer."""
    return await (await add.enqueue(a, b)).result(timeout=60)


@app.post("/nap")
async def enqueue_nap(seconds: float) -> dict[str, str]:
    return {"job_id": (await nap.enqueue(seconds)).id}


@app.post("/boom")
async def enqueue_boom(message: str) -> dict[str, str]:
    return {"job_id": (await boom.enqueue(message)).id}


broken = qa.Queue(queue.client, name=f"{queue.name}-broken")


@broken.on_startup
async def refuse(state: dict[str, Any]) -> None:
    raise RuntimeError("the database is down")


failing_app = FastAPI(lifespan=lifespan(broken))
