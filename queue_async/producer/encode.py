"""Turns a ``JobSpec`` into a packed job for enqueue.lua, raising before anything is sent."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import orjson

from queue_async.broker.scripts import Arg
from queue_async.broker.wire import Opt, pack_fields, pack_headers, pack_job
from queue_async.codec import Codec
from queue_async.exceptions import ConfigurationError, EncodeError, PayloadTooLarge
from queue_async.identifiers import check_job_id
from queue_async.options import EnqueueOptions, TaskOptions, to_ms
from queue_async.producer.shards import id_in_shard
from queue_async.producer.tasks import JobSpec

_KEY_MAX = 200


class _IdPool:
    """Job ids made from OS randomness a few KiB at a time: one getrandom call and one base64
    pass per 186 ids instead of one each. Taken by ``list.pop``, atomic under the GIL, so no
    lock: two threads that find the pool empty at once both refill it, which costs nothing
    but randomness."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def take(self) -> str:
        """22 random URL-safe characters: about 132 random bits (a queued job stores its id
        twice, so it is short). Never "-" first: a command line would read such an id as an
        option."""
        while True:
            try:
                return self.ids.pop()
            except IndexError:
                self.ids.extend(_fresh_ids())

    def forget(self) -> None:
        """A forked child must not hand out the ids its parent still holds."""
        self.ids = []


def _fresh_ids() -> list[str]:
    chars = base64.urlsafe_b64encode(os.urandom(3072)).decode()
    ids = [chars[at : at + 22] for at in range(0, len(chars) - 21, 22)]
    return [job_id if job_id[0] != "-" else "A" + job_id[1:] for job_id in ids]


_ids = _IdPool()
os.register_at_fork(after_in_child=_ids.forget)


def new_job_id() -> str:
    """A new job id (see ``_IdPool.take``)."""
    return _ids.take()


def encode_job(
    codec: Codec, max_payload_bytes: int, spec: JobSpec[Any], shards: int = 1
) -> tuple[str, bytes]:
    """The job's id and the job packed for enqueue.lua (id, options, task, payload).

    On a queue of ``shards`` > 1, a new id falls in the shard of the job's ``shard_key``, else
    of its unique key, else of its concurrency key (see ``producer/shards.py``), so that jobs
    that share one of them share a shard, and with it their order, claim or limit."""
    args, kwargs = _arguments(spec)
    payload = _payload(codec, max_payload_bytes, spec, args, kwargs)
    opts = spec.options
    defaults = spec.defaults
    priority = _priority(opts, defaults)
    gate: list[Arg] = []
    if defaults is not None and defaults.concurrency_key is not None:
        gate = [_concurrency_key(spec, defaults), defaults.concurrency_limit]
    unique = _unique(spec, args, kwargs, payload, opts, defaults)
    if opts is None and not gate and not unique:
        # The common case: no options at all travel as one empty field.
        job_id = new_job_id()
        packed = pack_fields([priority]) if priority else b""
        return job_id, pack_job(job_id, packed, spec.task, payload)
    if opts is not None and opts.job_id is not None:
        job_id = check_job_id(opts.job_id)
    elif shards > 1 and (key := _route_key(opts, unique, gate)) is not None:
        job_id = id_in_shard(new_job_id, key, shards)
    else:
        job_id = new_job_id()
    options = _options(opts, priority, gate, unique)
    return job_id, pack_job(job_id, pack_fields(options), spec.task, payload)


def _route_key(opts: EnqueueOptions | None, unique: list[Arg], gate: list[Arg]) -> str | None:
    if opts is not None and opts.shard_key is not None:
        return opts.shard_key
    if unique:
        return str(unique[0])
    if gate:
        return str(gate[0])
    return None


def _options(
    opts: EnqueueOptions | None, priority: int, gate: list[Arg], unique: list[Arg]
) -> list[Arg]:
    """The packed options' fields by their places (``Opt``), trailing defaults left out."""
    options: list[Arg] = [""] * len(Opt)
    options[Opt.PRIORITY] = priority
    if opts is not None:
        if opts.at is not None:
            at = opts.at if opts.at.tzinfo else opts.at.replace(tzinfo=UTC)
            options[Opt.AT] = max(1, int(at.timestamp() * 1000))
        if opts.delay is not None:
            options[Opt.DELAY] = to_ms(opts.delay)
        if opts.retries is not None:
            options[Opt.RETRIES] = opts.retries
        if opts.timeout is not None:
            options[Opt.TIMEOUT] = to_ms(opts.timeout)
        if opts.keep_result is not None:
            options[Opt.KEEP] = to_ms(opts.keep_result)
        if opts.headers:
            options[Opt.HEADERS] = pack_headers(opts.headers)
        if opts.replace:
            options[Opt.REPLACE] = "1"
    if gate:
        options[Opt.CKEY], options[Opt.CLIMIT] = gate
    if unique:
        options[Opt.UKEY], options[Opt.UWINDOW], options[Opt.URUNNING] = unique
    while options[-1] == "":
        options.pop()
    return options


def _arguments(spec: JobSpec[Any]) -> tuple[Sequence[Any], dict[str, Any]]:
    """The arguments checked against the task's signature and turned into JSON-compatible
    values by their annotations, when the spec came from the task (by name: as given)."""
    typed = spec.typed
    if typed is None or typed.as_is(spec.args, spec.kwargs):
        return spec.args, spec.kwargs
    try:
        return typed.dump_args(spec.args, spec.kwargs)
    except TypeError as exc:  # the call does not bind: Python's message
        raise EncodeError(
            f"cannot enqueue {spec.task}: its arguments do not fit {spec.task}{typed.signature}: "
            f"{exc}"
        ) from exc
    except ValueError as exc:
        raise EncodeError(
            f"cannot enqueue {spec.task}: {exc} (for {spec.task}{typed.signature})"
        ) from exc


def _payload(
    codec: Codec,
    max_payload_bytes: int,
    spec: JobSpec[Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> bytes:
    try:
        payload = codec.encode([args, kwargs])
    except Exception as exc:  # a codec may raise anything (pickle.PicklingError...)
        raise EncodeError(
            f"cannot enqueue {spec.task}: {_culprit(codec, args, kwargs)} cannot be encoded by "
            f"{type(codec).__name__} ({exc})"
        ) from exc
    if len(payload) > max_payload_bytes:
        raise PayloadTooLarge(
            f"cannot enqueue {spec.task}: its arguments encode to {len(payload)} bytes, "
            f"over the queue's max_payload_bytes={max_payload_bytes}; store large data "
            "elsewhere and pass a reference"
        )
    return payload


def _priority(opts: EnqueueOptions | None, defaults: TaskOptions | None) -> int:
    if opts is not None and opts.priority is not None:
        return opts.priority
    return defaults.priority if defaults else 0


def _unique(
    spec: JobSpec[Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    payload: bytes,
    opts: EnqueueOptions | None,
    defaults: TaskOptions | None,
) -> list[Arg]:
    """The unique key, window and while-running flag; [] when the job is not unique."""
    key = None
    if opts is not None and opts.unique_key is not None:
        key = f"key:{opts.unique_key}"
    elif (opts is not None and opts.unique) or (
        defaults is not None and defaults.unique and (opts is None or opts.unique is not False)
    ):
        key = f"args:{spec.task}:{_digest(args, kwargs, payload)}"
    if key is None:
        return []
    window = opts.unique_for if opts is not None and opts.unique_for is not None else None
    if window is None and defaults is not None:
        window = defaults.unique_for
    running = opts is not None and bool(opts.unique_while_running)
    return [key, "" if window is None else to_ms(window), "1" if running else ""]


def _digest(args: Sequence[Any], kwargs: dict[str, Any], payload: bytes) -> str:
    """Equal arguments give equal digests, whatever the order keyword arguments came in."""
    try:
        canonical = orjson.dumps([args, kwargs], option=orjson.OPT_SORT_KEYS)
    except TypeError:  # a custom codec took what JSON cannot: its bytes are the arguments
        canonical = payload
    return hashlib.sha1(canonical, usedforsecurity=False).hexdigest()


def _concurrency_key(spec: JobSpec[Any], defaults: TaskOptions) -> str:
    assert defaults.concurrency_key is not None
    try:
        key = defaults.concurrency_key(*spec.args, **spec.kwargs)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot enqueue {spec.task}: its concurrency_key raised {exc!r}"
        ) from exc
    text = str(key)
    if not text or len(text) > _KEY_MAX:
        raise ConfigurationError(
            f"cannot enqueue {spec.task}: its concurrency_key gave {text!r}; it must be 1 to "
            f"{_KEY_MAX} characters"
        )
    return text


def _culprit(codec: Codec, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """Name the first argument the codec refuses, for the error message."""
    for index, value in enumerate(args):
        try:
            codec.encode(value)
        except Exception:  # noqa: BLE001 - any refusal names the culprit
            return f"argument {index} ({type(value).__name__})"
    for key, value in kwargs.items():
        try:
            codec.encode(value)
        except Exception:  # noqa: BLE001 - any refusal names the culprit
            return f"keyword argument {key!r} ({type(value).__name__})"
    return "its arguments"
