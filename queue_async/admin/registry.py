"""Every queue of a key prefix on a server, from the registry producers and workers keep.

The registry is one set (``QueueKeys.registry(prefix)``, outside every queue's hash slot):
a ``Queue`` adds its name at its first enqueue, and a worker at its start (both in
``Queue.check_server``), so finding the queues needs no ``KEYS`` or ``SCAN``. A name stays
registered once added: a queue whose keys are all gone is listed with zeros (reading never
writes, and the next enqueue would bring the queue back anyway).
"""

from __future__ import annotations

import asyncio

from queue_async.broker.errors import translate_errors
from queue_async.broker.keys import QueueKeys
from queue_async.broker.scripts import Scripts
from queue_async.broker.stats import read_stats
from queue_async.broker.wire import as_text
from queue_async.exceptions import ConfigurationError
from queue_async.models import QueueStats
from queue_async.producer.queue import Queue

__all__ = ["all_stats", "forget", "queue_names"]


async def queue_names(queue: Queue) -> list[str]:
    """The registered queue names of ``queue``'s prefix, sorted (names that cannot be a
    queue's, written there by hand, are left out)."""
    with translate_errors("reading the registry of queues"):
        members = await queue.client.smembers(QueueKeys.registry(queue.prefix))
    names = []
    for member in members:
        name = as_text(member)
        try:
            QueueKeys.for_queue(queue.prefix, name)
        except ConfigurationError:
            continue
        names.append(name)
    return sorted(names)


async def all_stats(queue: Queue) -> list[QueueStats]:
    """``QueueStats`` of every registered queue of ``queue``'s prefix, by name, read over
    ``queue``'s own connections (one script call per queue)."""
    names = await queue_names(queue)
    own = queue._broker.scripts

    def scripts_for(name: str) -> Scripts:
        if name == queue.name:
            return own
        scripts = Scripts(queue.client, QueueKeys.for_queue(queue.prefix, name))
        scripts.functions = own.functions
        return scripts

    return list(await asyncio.gather(*(read_stats(scripts_for(n), n) for n in names)))


async def forget(queue: Queue, name: str) -> bool:
    """Take ``name`` out of the registry of ``queue``'s prefix (its keys are untouched; a
    later enqueue or worker start registers it again). True if it was registered."""
    QueueKeys.for_queue(queue.prefix, name)  # refuses a name that cannot be a queue's
    with translate_errors("updating the registry of queues"):
        removed = await queue.client.srem(QueueKeys.registry(queue.prefix), name)
    return bool(removed)
