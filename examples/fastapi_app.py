"""A FastAPI app that enqueues jobs and runs their worker in its own process.

    pip install 'queue-async[fastapi]' uvicorn
    REDIS_URL=redis://localhost:6379/0 uvicorn examples.fastapi_app:app

Then:

    curl -X POST localhost:8000/signup -H 'content-type: application/json' \\
         -d '{"address": "a@b.c"}'                     # {"job_id": "..."}
    curl localhost:8000/jobs/<job_id>/result           # waits for it, up to 10 s
    curl 'localhost:8000/add?a=1&b=2'                  # enqueues, awaits the result: 3

The worker runs in the app's lifespan, so one ``uvicorn`` process both serves and works; with
``lifespan(queue, worker=False)`` the jobs run in ``queue-async worker`` processes instead.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

import queue_async as qa
from queue_async.contrib.fastapi import job_router, lifespan

queue = qa.Queue(name="fastapi-demo")  # on $REDIS_URL, else redis://localhost:6379/0


@queue.task(retries=3, timeout=30)
async def send_welcome(ctx: qa.JobContext, address: str) -> str:
    """Pretend to send a welcome email."""
    return f"welcome sent to {address} (try {ctx.attempt})"


@queue.task
async def add(a: int, b: int) -> int:
    return a + b


app = FastAPI(lifespan=lifespan(queue, concurrency=100))
app.include_router(job_router(queue))


class Signup(BaseModel):
    address: str


@app.post("/signup")
async def signup(body: Signup) -> dict[str, str]:
    """Enqueue the welcome email and answer at once; ``GET /jobs/{job_id}`` follows it."""
    handle = await send_welcome.enqueue(body.address)
    return {"job_id": handle.id}


@app.get("/add")
async def add_numbers(a: int, b: int) -> int:
    """Enqueue ``add`` and wait for the worker's answer."""
    return await (await add.enqueue(a, b)).result(timeout=10)
