"""Property-based tests (hypothesis) of everything that crosses from callers into Redis.

1. Arbitrary arguments: ``enqueue`` either stores them and a worker receives them after a JSON
   round trip (``as_json`` below spells out the expected normalisation), or raises
   ``EncodeError`` and writes nothing.
2. Garbage in a job's ``payload`` field, and a ready id that points at no job: the job goes to
   dead naming the payload, the id is dropped, and the worker runs every other job.
3. Hostile queue names, key prefixes, task names and job ids: each is refused with a clear error,
   or used verbatim with every key inside the queue's ``<prefix>:{<name>}:`` namespace (checked
   against a snapshot of a private server's whole keyspace).
4. ``max_payload_bytes``: a payload of exactly the limit is accepted, one byte more is refused
   with ``PayloadTooLarge`` and nothing is written.

Each example enqueues a batch and runs one burst worker for it (a few ms), so every property is
checked end to end, through a real worker, and hypothesis can still shrink a failure.
"""

from __future__ import annotations

import functools
import math
import string
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pydantic
import pytest
import redis.asyncio
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

import queue_async as qa
from queue_async.broker.keys import QueueKeys
from queue_async.codec import decode_payload
from queue_async.embedded import EmbeddedServer
from queue_async.worker.jobs import handed_job
from tests.conftest import unique_name
from tests.helpers import drain, set_payload, stored_payload

pytestmark = pytest.mark.anyio

SINK = "props.sink"
I64_MIN, U64_MAX = -(2**63), 2**64 - 1
# Keyword names that are also parameter names of queue_async's own call chain
# (``queue.enqueue(task, ...)``, ``task.enqueue(self, ...)``, ``Task.run(self, ctx, ...)``):
# test_keyword_arguments_named_like_library_parameters_reach_the_handler covers them, the
# general properties leave them out so that they can find anything else.
RESERVED_KEYWORDS = frozenset({"task", "self", "ctx"})


def examples(n: int) -> settings:
    """Hypothesis settings for a test that talks to a real server: no deadline, no database
    (nothing written to the working tree), and one fixture set-up shared by all examples."""
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- expected normalisation -------------------------------------------------------------------


class Unencodable(Exception):
    """``as_json``: the default codec must refuse this value."""


class Opaque:
    """Instances of a class no codec knows."""

    def __repr__(self) -> str:
        return "Opaque()"


def has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def as_json(value: Any) -> Any:
    """What a worker receives for ``value`` after the default codec's JSON round trip.

    None, bools, ints of 64 bits (signed or unsigned), finite floats and strs come back as
    they are; tuples come back as lists; dicts keep their str keys; datetimes and dates come
    back as ISO strings and UUIDs as their canonical str (orjson, see JsonCodec). Raises
    ``Unencodable`` for what JSON cannot carry: ints beyond 64 bits, NaN and infinities
    (JsonCodec is documented strict: "no NaN"), strs with lone surrogates, non-str dict keys,
    bytes, sets and arbitrary objects.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if I64_MIN <= value <= U64_MAX:
            return value
        raise Unencodable(f"int of {value.bit_length()} bits")
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise Unencodable(f"non-finite float {value!r}")
    if isinstance(value, str):
        if has_surrogate(value):
            raise Unencodable("str with a lone surrogate")
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [as_json(item) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise Unencodable("dict with a non-str key")
        return {as_json(key): as_json(item) for key, item in value.items()}
    raise Unencodable(type(value).__name__)


def typed(value: Any) -> Any:
    """``value`` with every type made explicit, so that equality is exact: ``True`` != ``1``,
    ``1`` != ``1.0``, ``0.0`` != ``-0.0``, and a tuple is not a list. Dict keys are strs on
    both sides of a comparison (JSON has no other keys); their order does not matter."""
    if isinstance(value, list | tuple):
        return [type(value).__name__, [typed(item) for item in value]]
    if isinstance(value, dict):
        return ["dict", {key: typed(item) for key, item in value.items()}]
    if isinstance(value, float):
        return ["float", value.hex()]
    return [type(value).__name__, value]


# -- strategies -------------------------------------------------------------------------------

surrogate_texts = st.tuples(
    st.text(max_size=4), st.characters(categories=["Cs"]), st.text(max_size=4)
).map("".join)
texts = st.text(max_size=12) | surrogate_texts
ints = st.one_of(
    st.integers(),
    st.integers(min_value=I64_MIN - 2, max_value=I64_MIN + 2),
    st.integers(min_value=U64_MAX - 2, max_value=U64_MAX + 2),
    st.integers(min_value=2**64, max_value=2**300),
    st.integers(min_value=-(2**300), max_value=I64_MIN - 1),
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
non_finite_floats = st.sampled_from([math.inf, -math.inf, math.nan, -math.nan]) | st.integers(
    0x7FF0000000000001, 0x7FFFFFFFFFFFFFFF
).map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0])  # NaNs with payloads
temporal = st.one_of(
    st.datetimes(), st.datetimes(timezones=st.just(UTC)), st.dates(), st.uuids(version=4)
)
opaque = st.one_of(
    st.binary(max_size=6),
    st.binary(max_size=6).map(bytearray),
    st.sets(st.integers(0, 9), max_size=3),
    st.frozensets(st.integers(0, 9), max_size=3),
    st.complex_numbers(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.builds(object),
    st.builds(Opaque),
)
leaves = st.one_of(st.none(), st.booleans(), ints, finite_floats, texts, temporal, opaque)
hashable_keys = st.one_of(texts, st.integers(-3, 3), st.none(), st.booleans(), st.tuples(st.none()))


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(texts, children, max_size=4),
        st.dictionaries(hashable_keys, children, max_size=3),
    )


values = st.recursive(leaves, containers, max_leaves=10)
keyword_names = texts.filter(lambda name: name not in RESERVED_KEYWORDS)


@dataclass(frozen=True)
class Call:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    by_name: bool
    """``queue.enqueue("props.sink", ...)`` rather than ``sink.enqueue(...)``."""


def calls(items: st.SearchStrategy[Any]) -> st.SearchStrategy[Call]:
    return st.builds(
        Call,
        st.lists(items, max_size=3).map(tuple),
        st.dictionaries(keyword_names, items, max_size=3),
        st.booleans(),
    )


# Names as people type them, and as attackers do: braces that would move the hash tag, glob
# characters, separators, whitespace, control characters, NUL, lone surrogates, the empty
# string, and lengths around the limits.
HOSTILE = [
    "",
    "{",
    "}",
    "{}",
    "a{b}",
    "}{",
    "{tag}",
    ":",
    "::",
    "a:b",
    "job:x",
    ".",
    "..",
    "*",
    "a?",
    "[ab]",
    "\\",
    "a b",
    "\t",
    "\n",
    "line\nbreak",
    "\r\n",
    "\x00",
    "nul\x00",
    "\x7f",
    "\u200b",
    "\u2028",
    "\ufeff",
    "é",
    "名前",
    "🙂",
    "\ud800",
    "q" * 99,
    "q" * 100,
    "q" * 101,
    "q" * 200,
    "q" * 201,
    "q" * 10_000,
]
hostile_names = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from("ab9:_.-{} *\n\x00é"), max_size=12),
    st.from_regex(r"[A-Za-z0-9_.\-:]{1,100}", fullmatch=True),
    surrogate_texts,
)


# -- Redis helpers ----------------------------------------------------------------------------


async def snapshot(client: redis.asyncio.Redis, match: str = "*") -> dict[bytes, bytes | None]:
    """Every key matching ``match`` with its DUMP: equal snapshots mean nothing was written."""
    keys = [key async for key in client.scan_iter(match=match, count=1000)]
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.dump(key)
        dumps = await pipe.execute()
    return dict(zip(keys, dumps, strict=True))


async def queue_snapshot(queue: qa.Queue) -> dict[bytes, bytes | None]:
    return await snapshot(queue.client, f"{queue._broker.keys.prefix}*")


async def clear(queue: qa.Queue) -> None:
    """Delete the queue's keys and its name in the registry of queues, so the next example
    starts from nothing."""
    keys = [
        key
        async for key in queue.client.scan_iter(match=f"{queue._broker.keys.prefix}*", count=1000)
    ]
    if keys:
        await queue.client.delete(*keys)
    await queue.client.srem(QueueKeys.registry(queue.prefix), queue.name)


def assert_confined(
    queue: qa.Queue, before: dict[bytes, bytes | None], after: dict[bytes, bytes | None]
) -> None:
    """Keys outside the queue's namespace are exactly as they were; every key inside it hashes
    to the slot of the queue's tag."""
    namespace = queue._broker.keys.prefix.encode()
    # The registry of queues is the one key of a prefix outside every queue (see
    # Admin.queues): the queue's name is its only change there.
    registry = QueueKeys.registry(queue.prefix).encode()
    outside_before = {
        k: v for k, v in before.items() if not k.startswith(namespace) and k != registry
    }
    outside_after = {
        k: v for k, v in after.items() if not k.startswith(namespace) and k != registry
    }
    assert outside_after == outside_before, "a key outside the queue's namespace was written"
    slot = key_slot(queue.name.encode())
    assert {key: key_slot(key) for key in after if key.startswith(namespace)} == {
        key: slot for key in after if key.startswith(namespace)
    }


@dataclass
class Sink:
    """A task that records the arguments each job receives, by job id."""

    task: qa.Task[..., None]
    received: dict[str, tuple[list[Any], dict[str, Any]]]
    tasks: dict[str, str]
    """The task name each job ran under (``ctx.task``), by job id."""


def add_sink(queue: qa.Queue, name: str = SINK, retries: int = 0) -> Sink:
    received: dict[str, tuple[list[Any], dict[str, Any]]] = {}
    tasks: dict[str, str] = {}

    # ctx is positional-only: a keyword argument named "ctx" belongs in **kwargs.
    async def record(ctx: qa.JobContext, /, *args: Any, **kwargs: Any) -> None:
        received[ctx.job_id] = (list(args), kwargs)
        tasks[ctx.job_id] = ctx.task

    return Sink(queue.task(name=name, retries=retries)(record), received, tasks)


@pytest.fixture
def sink(queue: qa.Queue) -> Sink:
    return add_sink(queue)


@pytest.fixture
def patient_sink(queue: qa.Queue) -> Sink:
    """The sink with retries, for jobs that must not be retried anyway."""
    return add_sink(queue, "props.patient", retries=3)


@pytest.fixture
async def observer(private_server: EmbeddedServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the test's own server, holding a few bystander keys: another queue's, and
    keys of other applications whose names look like ours."""
    client = redis.asyncio.Redis.from_url(private_server.url)
    await client.zadd("qa:{bystander}:ready", {"someone-elses-job": 1})
    await client.hset("qa:{bystander}:job:someone-elses-job", mapping={"task": "t", "state": "x"})
    await client.set("qa", "app key")
    await client.set("qa:{", "app key")
    await client.set("job:1", "app key")
    yield client
    await client.aclose()


# -- 1. arbitrary arguments -------------------------------------------------------------------


def spec_of(queue: qa.Queue, sink: Sink, call: Call) -> qa.JobSpec[Any]:
    if call.by_name:
        return queue.call(SINK, *call.args, **call.kwargs)
    return sink.task.call(*call.args, **call.kwargs)


async def enqueue_call(queue: qa.Queue, sink: Sink, call: Call) -> qa.JobHandle[Any]:
    if call.by_name:
        return await queue.enqueue(SINK, *call.args, **call.kwargs)
    return await sink.task.enqueue(*call.args, **call.kwargs)


def expected_payload(call: Call) -> list[Any] | None:
    """``[args, kwargs]`` as a worker must receive them, or None if enqueue must refuse."""
    try:
        return as_json([list(call.args), call.kwargs])  # type: ignore[no-any-return]
    except Unencodable:
        return None


async def assert_refused(
    queue: qa.Queue, enqueue: Callable[[], Any], before: dict[bytes, bytes | None]
) -> None:
    """``enqueue()`` raises EncodeError naming the task, and the queue's keys are unchanged."""
    refused: qa.EncodeError | None = None
    try:
        handle = await enqueue()
    except qa.EncodeError as exc:
        refused = exc
    if refused is None:
        stored = await queue.read_job(handle.id)
        pytest.fail(
            "enqueue accepted arguments the codec must refuse; stored as "
            f"{None if stored is None else [stored.args, stored.kwargs]!r}"
        )
    assert SINK in str(refused)
    assert await queue_snapshot(queue) == before


async def check_round_trip(queue: qa.Queue, sink: Sink, batch: list[Call], many: bool) -> None:
    """The property of part 1 for one batch of calls, through one burst worker."""
    expected = [expected_payload(call) for call in batch]
    accepted: list[tuple[qa.JobHandle[Any], list[Any]]] = []
    if many:
        before = await queue_snapshot(queue)
        specs = [spec_of(queue, sink, call) for call in batch]
        if any(payload is None for payload in expected):
            await assert_refused(queue, lambda: queue.enqueue_many(specs), before)
        else:
            handles = await queue.enqueue_many(specs)
            accepted = [(h, p) for h, p in zip(handles, expected, strict=True) if p is not None]
    else:
        for call, payload in zip(batch, expected, strict=True):
            before = await queue_snapshot(queue)
            if payload is None:
                await assert_refused(
                    queue, functools.partial(enqueue_call, queue, sink, call), before
                )
            else:
                accepted.append((await enqueue_call(queue, sink, call), payload))

    for handle, payload in accepted:
        info = await handle.info()
        assert info.status is qa.JobStatus.READY
        assert typed([info.args, info.kwargs]) == typed(payload)
    await drain(queue)
    for handle, payload in accepted:
        info = await handle.info()
        assert handle.id in sink.received, f"the handler never ran: {info.status} {info.error}"
        assert typed(list(sink.received[handle.id])) == typed(payload)
        assert info.status is qa.JobStatus.DONE
    await clear(queue)


@examples(60)
@given(batch=st.lists(calls(values), min_size=1, max_size=5), many=st.booleans())
@example(batch=[Call((1, (2, 3)), {"k": {"k": (None,)}}, by_name=True)], many=False)
@example(batch=[Call((U64_MAX, I64_MIN, 2**64), {}, by_name=False)], many=False)
@example(batch=[Call(("\ud800",), {}, by_name=True), Call(({1: 2},), {}, by_name=False)], many=True)
@example(batch=[Call((), {"": b"x", "ok": {1, 2}}, by_name=False)], many=False)
async def test_arguments_round_trip_as_json_or_raise_encode_error_writing_nothing(
    queue: qa.Queue, sink: Sink, batch: list[Call], many: bool
) -> None:
    await check_round_trip(queue, sink, batch, many)


@examples(15)
@given(
    value=st.one_of(
        non_finite_floats,
        st.lists(non_finite_floats, min_size=1, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3), non_finite_floats, min_size=1, max_size=2),
    ),
    by_name=st.booleans(),
)
@example(value=math.nan, by_name=False)
@example(value=math.inf, by_name=True)
async def test_non_finite_floats_raise_encode_error_or_round_trip(
    queue: qa.Queue, sink: Sink, value: Any, by_name: bool
) -> None:
    # JsonCodec is documented as strict ("no NaN"): NaN and the infinities have no JSON form.
    await check_round_trip(queue, sink, [Call((value,), {}, by_name)], many=False)


@examples(20)
@given(depth=st.integers(1, 600), by_name=st.booleans())
@example(depth=600, by_name=False)
async def test_deeply_nested_arguments_round_trip_or_raise_encode_error_writing_nothing(
    queue: qa.Queue, sink: Sink, depth: int, by_name: bool
) -> None:
    # No oracle for the depth limit (it is orjson's): either outcome, but never a stored job
    # that differs from the arguments, and never a partial write.
    nested: list[Any] = []
    for _ in range(depth):
        nested = [nested]
    call = Call((nested,), {}, by_name)
    before = await queue_snapshot(queue)
    try:
        handle = await enqueue_call(queue, sink, call)
    except qa.EncodeError:
        assert await queue_snapshot(queue) == before
        return
    await drain(queue)
    assert sink.received[handle.id] == ([nested], {})
    assert (await handle.info()).status is qa.JobStatus.DONE
    await clear(queue)


@pytest.mark.parametrize("name", sorted(RESERVED_KEYWORDS))
@pytest.mark.parametrize("by_name", [True, False], ids=["queue.enqueue", "task.enqueue"])
async def test_keyword_arguments_named_like_library_parameters_reach_the_handler(
    queue: qa.Queue, sink: Sink, name: str, by_name: bool
) -> None:
    # A handler parameter called "task", "ctx" or "self" is ordinary (a template's ctx, a
    # task to run); the enqueue methods and the worker must not swallow or reject it because
    # their own parameters share the name. The sink takes its context positional-only.
    call = Call((), {name: "value"}, by_name)
    await check_round_trip(queue, sink, [call], many=False)
    await check_round_trip(queue, sink, [call], many=True)


# -- 2. garbage payloads and dangling ids -----------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(I64_MIN, U64_MAX) | finite_floats | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
garbage_payloads = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32).map(str.encode),
    json_values.map(orjson.dumps),
    # The right shape: the job is not garbage after all and must run with these arguments.
    st.tuples(
        st.lists(json_values, max_size=3),
        st.dictionaries(st.text().filter(lambda k: k not in RESERVED_KEYWORDS), json_values),
    ).map(lambda pair: orjson.dumps(list(pair))),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"[[]]",
            b"[[], {}",
            b"[[], {}, 1]",
            b"[{}, []]",
            b"[[1e999], {}]",
            b"[[NaN], {}]",
            b'[["\\ud800"], {}]',
            b"\xef\xbb\xbf[[], {}]",
            b"\x00" * 8,
            b"[" * 2000 + b"]" * 2000,
        ]
    ),
)
ghost_ids = st.binary(max_size=40) | hostile_names.filter(lambda s: not has_surrogate(s)).map(
    str.encode
)


@examples(40)
@given(garbage=garbage_payloads, ghost=ghost_ids, ghost_score=st.integers(-(2**40), 2**40))
async def test_garbage_payload_goes_to_dead_and_a_dangling_ready_id_is_dropped_and_others_run(
    queue: qa.Queue, patient_sink: Sink, garbage: bytes, ghost: bytes, ghost_score: int
) -> None:
    sink = patient_sink
    first = await sink.task.enqueue("first")
    broken = await sink.task.enqueue("broken")
    last = await sink.task.enqueue("last")
    await set_payload(queue, broken.id, garbage)
    ghost_key = queue._broker.keys.prefix.encode() + b"job:" + ghost
    assert await queue.client.exists(ghost_key) == 0
    await queue.client.zadd(queue._broker.keys.ready, {ghost: ghost_score})
    # read_job shows an undecodable payload as no arguments; it never raises.
    assert (await broken.info()).status is qa.JobStatus.READY

    await drain(queue)

    for handle, arg in ((first, "first"), (last, "last")):
        assert sink.received[handle.id] == ([arg], {})
        assert (await handle.info()).status is qa.JobStatus.DONE
    info = await broken.info()
    try:
        args, kwargs = decode_payload(queue.codec, garbage)
    except ValueError:
        assert info.status is qa.JobStatus.DEAD
        assert info.error is not None and "payload cannot be decoded" in info.error
        assert info.attempts == 1  # decoding never gets better: not retried
        assert (info.args, info.kwargs) == ([], {})
        assert await queue.client.zscore(queue._broker.keys.dead, broken.id) is not None
        assert broken.id not in sink.received
    else:
        assert info.status is qa.JobStatus.DONE
        assert sink.received[broken.id] == (args, kwargs)

    # The dangling id is gone from every set and nothing was created for it.
    for key in (
        queue._broker.keys.ready,
        queue._broker.keys.active,
        queue._broker.keys.scheduled,
        queue._broker.keys.dead,
    ):
        assert await queue.client.zscore(key, ghost) is None
    assert await queue.client.exists(ghost_key) == 0
    stats = await queue.stats()
    assert (stats.ready, stats.active, stats.scheduled) == (0, 0, 0)
    await clear(queue)


# -- 3. hostile names and ids -----------------------------------------------------------------


def must_be_refused(name: str, limit: int, *, in_hash_tag: bool) -> bool:
    """True if no sane key scheme can take ``name``: empty, too long, whitespace, control or
    other unprintable characters, lone surrogates; and braces if the name is (or comes before)
    the hash tag, which they would move. A job id comes after the tag: braces are harmless."""
    return (
        not 0 < len(name) <= limit
        or (in_hash_tag and ("{" in name or "}" in name))
        or not name.isprintable()
        or any(char.isspace() for char in name)
    )


@examples(300)
@given(prefix_a=hostile_names, name_a=hostile_names, prefix_b=hostile_names, name_b=hostile_names)
@example(prefix_a="qa", name_a="a", prefix_b="qa", name_b="a:b")
@example(prefix_a="qa:x", name_a="a", prefix_b="qa", name_b="x")
async def test_accepted_queue_names_and_prefixes_give_disjoint_single_slot_namespaces(
    client: redis.asyncio.Redis, prefix_a: str, name_a: str, prefix_b: str, name_b: str
) -> None:
    namespaces: list[tuple[tuple[str, str], str]] = []
    for prefix, name in ((prefix_a, name_a), (prefix_b, name_b)):
        refused: str | None = None
        try:
            queue = qa.Queue(client, name=name, prefix=prefix)
        except qa.ConfigurationError as exc:
            refused = str(exc)
        if refused is not None:
            assert "queue name" in refused or "key prefix" in refused
            continue
        assert not must_be_refused(name, 100, in_hash_tag=True)
        assert not must_be_refused(prefix, 100, in_hash_tag=True)
        keys = queue._broker.keys
        assert keys.prefix == f"{prefix}:{{{name}}}:"
        # The hash tag is exactly the queue name, for every key the queue builds.
        built = [keys.ready, keys.scheduled, keys.active, keys.dead, keys.wake, keys.seq]
        built += [keys.meta, keys.workers, keys.idle, keys.job("{x}"), keys.inbox("w:{1}")]
        built += [keys.worker("h{o}st:1")]
        assert all(key.startswith(keys.prefix) for key in built)
        assert {key_slot(key.encode()) for key in built} == {key_slot(name.encode())}
        namespaces.append(((prefix, name), keys.prefix))
    if len(namespaces) == 2 and namespaces[0][0] != namespaces[1][0]:
        (_, first), (_, second) = namespaces
        assert not first.startswith(second) and not second.startswith(first)


@examples(40)
@given(prefix=hostile_names, name=hostile_names)
@example(prefix="qa", name="a:b")
@example(prefix="x:{", name="y")
@example(prefix="qa", name="q" * 100)
async def test_hostile_queue_names_and_prefixes_are_refused_or_keep_every_key_in_the_namespace(
    private_server: EmbeddedServer, observer: redis.asyncio.Redis, prefix: str, name: str
) -> None:
    assume((prefix, name) != ("qa", "bystander"))
    before = await snapshot(observer)
    try:
        queue = qa.Queue(private_server.url, name=name, prefix=prefix)
    except qa.ConfigurationError:
        assert await snapshot(observer) == before
        return
    async with queue:
        sink = add_sink(queue)
        # Every script the life cycle runs: enqueue, cancel (of a scheduled job), lease,
        # extend (heartbeat), complete, fail (a task nobody registered), retire, watch.
        later = await sink.task.options(delay=60).enqueue("later")
        assert await queue.cancel(later.id)
        now = await sink.task.enqueue("now")
        orphan = await queue.enqueue("no.such.task")
        await drain(queue)
        await now.result(timeout=5)  # watch.lua, and the queue's done channel
        assert sink.received[now.id] == (["now"], {})
        assert (await orphan.info()).status is qa.JobStatus.DEAD
        after = await snapshot(observer)
        assert_confined(queue, before, after)
        assert queue._broker.keys.job(now.id).encode() in after
        await clear(queue)
    assert await snapshot(observer) == before


@examples(40)
@given(task_name=hostile_names)
@example(task_name="")
@example(task_name="t" * 100_000)
@example(task_name="\ud800")
async def test_hostile_task_names_are_refused_or_run_under_exactly_that_name(
    private_server: EmbeddedServer, observer: redis.asyncio.Redis, task_name: str
) -> None:
    async with qa.Queue(private_server.url, name=unique_name()) as queue:
        before = await snapshot(observer)
        try:
            sink = add_sink(queue, task_name)
        except ValueError:  # ConfigurationError or pydantic's ValidationError
            assert await snapshot(observer) == before
            return
        # Registered: under exactly that name, so producers that enqueue it by name reach it.
        assert sink.task.name == task_name
        assert queue.tasks.get(task_name) is sink.task
        handles: list[qa.JobHandle[Any]] = []
        for enqueue in (
            lambda: sink.task.enqueue(1),
            lambda: queue.enqueue(task_name, 2),
            lambda: queue.enqueue_many([queue.call(task_name, 3), sink.task.call(4)]),
        ):
            try:
                handle = await enqueue()
            except ValueError:  # a name Redis cannot carry, e.g. a lone surrogate
                assert await snapshot(observer) == before
                continue
            handles.extend(handle if isinstance(handle, list) else [handle])
        if not handles:
            return
        await drain(queue)
        for handle in handles:
            info = await handle.info()
            assert (info.task, info.status) == (task_name, qa.JobStatus.DONE)
            assert sink.tasks[handle.id] == task_name
        assert_confined(queue, before, await snapshot(observer))
        await clear(queue)


@examples(50)
@given(job_id=hostile_names)
@example(job_id="9:x")
@example(job_id="{other}:ready")
@example(job_id="*")
@example(job_id="🙂" * 200)
async def test_hostile_job_ids_are_refused_or_used_verbatim_inside_the_namespace(
    private_server: EmbeddedServer, observer: redis.asyncio.Redis, job_id: str
) -> None:
    async with qa.Queue(private_server.url, name=unique_name()) as queue:
        sink = add_sink(queue)
        before = await snapshot(observer)
        refused: str | None = None
        try:
            queue.job(job_id)
        except qa.JobNotFound as exc:  # an id that cannot exist names no job
            refused = str(exc)
        if refused is not None:
            assert "job id" in refused
            with pytest.raises(pydantic.ValidationError, match="job_id"):
                sink.task.options(job_id=job_id)
            assert await snapshot(observer) == before
            return
        assert not must_be_refused(job_id, 200, in_hash_tag=False)
        call = sink.task.options(job_id=job_id)

        # An idle worker (registered through lease.lua; no process behind it) is handed the job:
        # the id goes through the packed inbox format too, then back to ready on retire.
        await queue._broker.scripts.lease(1, 30_000, "idle:1", "idle", 3, 60_000, 100, 5000, 20_000)
        handle = await call.enqueue("x")
        assert handle.id == job_id
        packed = await queue.client.lindex(queue._broker.keys.inbox("idle"), 0)
        assert isinstance(packed, bytes)
        handed = handed_job(packed, queue)
        stored = await queue.client.hget(queue._broker.keys.job(job_id), "payload")
        assert (handed.id, handed.task, handed.payload) == (job_id, SINK, stored)
        assert await queue._broker.scripts.retire("idle") == 1

        await drain(queue)
        await handle.result(timeout=5)  # watch.lua, and the queue's done channel
        assert sink.received[job_id] == (["x"], {})
        again = await call.enqueue("y")  # the id exists: nothing new is enqueued
        assert again == handle
        await drain(queue)
        assert sink.received[job_id] == (["x"], {})
        info = await queue.job(job_id).info()
        assert (info.id, info.status, info.attempts) == (job_id, qa.JobStatus.DONE, 1)
        after = await snapshot(observer)
        assert_confined(queue, before, after)
        assert queue._broker.keys.job(job_id).encode() in after
        await clear(queue)


# -- 4. payloads over the limit ---------------------------------------------------------------

# Characters JSON writes as they are (no escaping), so the encoded size is known without the
# codec: [["<text>"],{}] is 9 bytes plus the text's UTF-8 bytes.
unescaped = st.characters(
    exclude_categories=["Cs", "Cc"], exclude_characters='"\\'
) | st.sampled_from(string.ascii_letters)


@examples(60)
@given(
    text=st.text(alphabet=unescaped, max_size=300),
    slack=st.integers(-3, 3) | st.integers(-1000, 1000),
    many=st.booleans(),
)
@example(text="", slack=-9, many=False)
@example(text="é" * 50, slack=0, many=False)
@example(text="é" * 50, slack=-1, many=True)
async def test_payload_limit_counts_encoded_bytes_and_refuses_larger_without_writing(
    redis_url: str, text: str, slack: int, many: bool
) -> None:
    size = 9 + len(text.encode())
    limit = max(1, size + slack)
    async with qa.Queue(redis_url, name=unique_name(), max_payload_bytes=limit) as queue:
        sink = add_sink(queue)
        before = await queue_snapshot(queue)

        async def enqueue() -> qa.JobHandle[None]:
            if many:
                # Another job of the same size first: the batch is all or nothing.
                handles = await queue.enqueue_many([sink.task.call(text), sink.task.call(text)])
                return handles[1]
            return await sink.task.enqueue(text)

        if size > limit:
            with pytest.raises(qa.PayloadTooLarge) as caught:
                await enqueue()
            assert isinstance(caught.value, qa.EncodeError)
            message = str(caught.value)
            assert f"{size} bytes" in message and f"max_payload_bytes={limit}" in message
            assert await queue_snapshot(queue) == before
            return
        handle = await enqueue()
        try:
            stored = await stored_payload(queue, handle.id)
            assert stored is not None and len(stored) == size
            await drain(queue)
            assert sink.received[handle.id] == ([text], {})
        finally:
            await clear(queue)


@pytest.mark.parametrize(("extra", "accepted"), [(0, True), (1, False)], ids=["at", "over"])
async def test_default_payload_limit_is_512_kib_inclusive(
    queue: qa.Queue, sink: Sink, extra: int, accepted: bool
) -> None:
    text = "x" * (512 * 1024 - 9 + extra)
    if not accepted:
        with pytest.raises(qa.PayloadTooLarge, match="max_payload_bytes=524288"):
            await sink.task.enqueue(text)
        assert await queue_snapshot(queue) == {}
        return
    handle = await sink.task.enqueue(text)
    await drain(queue)
    assert sink.received[handle.id] == ([text], {})
