"""Arguments and results travel by the handler's annotations: they arrive as their annotated
types (pydantic models, dataclasses, datetimes, Decimal, UUID, Enum, bytes, tuples, sets,
unions, nested containers); arguments that do not fit are refused at enqueue, or sent to dead
at once by the worker when a producer enqueued by name; plain JSON stays as it was."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import anyio
import pydantic
import pytest

import queue_async as qa
from queue_async.codec import TypedCall, is_plain
from tests.conftest import unique_name
from tests.helpers import MsgpackCodec, PickleCodec, drain, stored_payload

pytestmark = pytest.mark.anyio


class Order(pydantic.BaseModel):
    id: int
    placed: datetime
    total: Decimal
    tags: set[str] = set()


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str | None = None


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


NOW = datetime(2024, 5, 17, 12, 30, 15, 123456, tzinfo=UTC)
ORDER = Order(id=7, placed=NOW, total=Decimal("19.99"), tags={"gift"})

# (annotation, a value of it): each round-trips as an argument and as a result.
CASES: list[Any] = [
    pytest.param(Order, ORDER, id="pydantic-model"),
    pytest.param(Point, Point(1.5, -2.0, "p"), id="dataclass"),
    pytest.param(datetime, NOW, id="datetime"),
    pytest.param(date, date(2024, 2, 29), id="date"),
    pytest.param(time, time(23, 59, 1, 5), id="time"),
    pytest.param(timedelta, timedelta(days=1, seconds=3.5), id="timedelta"),
    pytest.param(Decimal, Decimal("12345678901234567890.000000001"), id="decimal"),
    pytest.param(uuid.UUID, uuid.uuid4(), id="uuid"),
    pytest.param(Color, Color.BLUE, id="enum"),
    pytest.param(Level, Level.HIGH, id="int-enum"),
    pytest.param(bytes, bytes(range(256)), id="bytes"),
    pytest.param(tuple[int, str], (1, "a"), id="tuple"),
    pytest.param(tuple[Decimal, ...], (Decimal("1.1"), Decimal("2")), id="variadic-tuple"),
    pytest.param(set[int], {1, 2, 3}, id="set"),
    pytest.param(frozenset[str], frozenset({"a", "b"}), id="frozenset"),
    pytest.param(datetime | None, None, id="optional-none"),
    pytest.param(datetime | None, NOW, id="optional-value"),
    pytest.param(int | Decimal, Decimal("0.5"), id="union"),
    pytest.param(dict[str, list[Point]], {"a": [Point(0, 0)], "b": []}, id="nested"),
    pytest.param(list[tuple[uuid.UUID, Color]], [(uuid.uuid4(), Color.RED)], id="nested-tuples"),
    pytest.param(dict[uuid.UUID, date], {uuid.uuid4(): date(2000, 1, 1)}, id="non-str-keys"),
]


def echo_task(queue: qa.Queue, annotation: Any) -> qa.Task[..., Any]:
    """A task that records what it got and returns it, annotated ``annotation`` both ways."""
    seen: list[Any] = []

    async def echo(value: Any) -> Any:
        seen.append(value)
        return value

    echo.__annotations__ = {"value": annotation, "return": annotation}
    task = queue.task(name="typed.echo")(echo)
    task.seen = seen  # type: ignore[attr-defined]
    return task


@pytest.mark.parametrize(("annotation", "value"), CASES)
async def test_a_typed_argument_and_result_arrive_as_their_annotated_type(
    queue: qa.Queue, annotation: Any, value: Any
) -> None:
    echo = echo_task(queue, annotation)
    handle = await echo.enqueue(value)
    await drain(queue)
    [seen] = echo.seen  # type: ignore[attr-defined]
    assert seen == value
    assert type(seen) is type(value)
    result = await handle.result(timeout=5)
    assert result == value
    assert type(result) is type(value)


async def test_arguments_by_position_keyword_varargs_and_kwargs_are_each_converted(
    queue: qa.Queue,
) -> None:
    seen: list[Any] = []

    @queue.task
    async def charge(
        ctx: qa.JobContext,
        order: Order,
        amount: Decimal,
        /,
        *extra: date,
        when: datetime,
        note: str = "",
        **more: uuid.UUID,
    ) -> None:
        seen.append((order, amount, extra, when, note, more))

    key = uuid.uuid4()
    await charge.enqueue(ORDER, Decimal("1.5"), date(2024, 1, 1), when=NOW, k=key)
    await drain(queue)
    assert seen == [(ORDER, Decimal("1.5"), (date(2024, 1, 1),), NOW, "", {"k": key})]
    assert isinstance(seen[0][0], Order)


async def test_a_sync_handler_gets_typed_arguments_too(queue: qa.Queue) -> None:
    @queue.task
    def total(orders: list[Order]) -> Decimal:
        return sum((o.total for o in orders), Decimal(0))

    handle = await total.enqueue([ORDER, ORDER])
    await drain(queue)
    assert await handle.result(timeout=5) == Decimal("39.98")


async def test_typed_arguments_travel_as_json_a_foreign_producer_can_write(
    queue: qa.Queue,
) -> None:
    @queue.task
    async def charge(order: Order, when: datetime, raw: bytes) -> None: ...

    handle = await charge.enqueue(ORDER, NOW, b"\xff\x00")
    payload = await stored_payload(queue, handle.id)
    assert payload is not None
    assert qa.JsonCodec().decode(payload) == [
        [
            {"id": 7, "placed": "2024-05-17T12:30:15.123456Z", "total": "19.99", "tags": ["gift"]},
            "2024-05-17T12:30:15.123456Z",
            "_wA=",  # URL-safe base64
        ],
        {},
    ]


async def test_a_producer_by_name_sends_json_and_the_worker_brings_the_types_back(
    queue: qa.Queue,
) -> None:
    seen: list[Any] = []

    @queue.task(name="billing.charge")
    async def charge(order: Order, when: datetime, *, tags: set[str]) -> Order:
        seen.append((order, when, tags))
        return order

    raw = {"id": 7, "placed": NOW.isoformat(), "total": "19.99", "tags": ["gift"]}
    handle = await queue.enqueue("billing.charge", raw, NOW.isoformat(), tags=["a", "a"])
    await drain(queue)
    assert seen == [(ORDER, NOW, {"a"})]
    # The task is registered in this process: its result comes back as its type, whatever
    # the handle came from (by name, queue.job(id)).
    assert await handle.result(timeout=5) == ORDER
    assert await queue.job(handle.id).result(timeout=5) == ORDER
    # info() shows what is stored: JSON.
    assert (await handle.info()).result == {
        "id": 7,
        "placed": "2024-05-17T12:30:15.123456Z",
        "total": "19.99",
        "tags": ["gift"],
    }


# -- refused at enqueue ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "fragments"),
    [
        pytest.param((ORDER,), {}, ["missing a required argument: 'amount'"], id="missing"),
        pytest.param(
            (ORDER, Decimal(1), NOW, 4), {}, ["too many positional arguments"], id="too-many"
        ),
        pytest.param(
            (ORDER, Decimal(1)),
            {"colour": "red"},
            ["unexpected keyword argument 'colour'"],
            id="unknown-keyword",
        ),
        pytest.param(
            (ORDER,),
            {"order": ORDER, "amount": Decimal(1)},
            ["multiple values for argument 'order'"],
            id="twice",
        ),
        pytest.param(
            ({"id": "x"}, Decimal(1)),
            {},
            ["argument 0 (order)", "id: Input should be a valid integer", "placed: Field required"],
            id="bad-model",
        ),
        pytest.param(
            (ORDER, "lots"),
            {},
            ["argument 1 (amount)", "valid decimal", "got str"],
            id="bad-decimal",
        ),
        pytest.param(
            (ORDER, Decimal(1)),
            {"when": "soon"},
            ["keyword argument 'when'", "valid datetime"],
            id="bad-keyword",
        ),
    ],
)
async def test_arguments_that_do_not_fit_the_signature_are_refused_at_enqueue(
    queue: qa.Queue, args: tuple[Any, ...], kwargs: dict[str, Any], fragments: list[str]
) -> None:
    @queue.task(name="billing.charge")
    async def charge(order: Order, amount: Decimal, when: datetime | None = None) -> None: ...

    with pytest.raises(qa.EncodeError) as caught:
        await charge.enqueue(*args, **kwargs)
    message = str(caught.value)
    assert message.startswith("cannot enqueue billing.charge: ")
    assert "billing.charge(order: Order, amount: Decimal, when: datetime | None = None)" in message
    for fragment in fragments:
        assert fragment in message
    with pytest.raises(qa.EncodeError):
        await queue.enqueue_many([charge.call(*args, **kwargs)])
    assert (await queue.stats()).ready == 0


async def test_plain_arguments_are_checked_for_binding_only(queue: qa.Queue) -> None:
    @queue.task
    async def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(qa.EncodeError, match=r"add\(x: int, y: int\)"):
        await add.enqueue(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        await add.enqueue(1, 2, z=3)  # type: ignore[call-arg]
    assert (await queue.stats()).ready == 0
    # A plain annotation is not checked: the value goes as JSON, as it always did.
    handle = await add.enqueue("a", "b")  # type: ignore[arg-type]
    await drain(queue)
    assert await handle.result(timeout=5) == "ab"


# -- sent to dead by the worker ----------------------------------------------------------------


async def dead_error(handle: qa.JobHandle[Any]) -> str:
    with anyio.fail_after(10), pytest.raises(qa.JobFailed) as caught:
        await handle.result(timeout=5)
    info = await handle.info()
    assert info.status is qa.JobStatus.DEAD
    assert info.attempts == 1  # not retried
    assert caught.value.error is not None
    return caught.value.error


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        pytest.param((), {}, "its arguments do not fit billing.charge(order: ", id="missing"),
        pytest.param(
            ({"id": 1}, "1"), {}, "argument 0 (order): placed: Field required", id="bad-model"
        ),
        pytest.param(
            (ORDER.model_dump(mode="json"), "x"),
            {},
            "argument 1 (amount): Input should be a valid decimal (got str)",
            id="bad-decimal",
        ),
        pytest.param(
            (ORDER.model_dump(mode="json"), "1"),
            {"extra": 1},
            "unexpected keyword argument 'extra'",
            id="extra",
        ),
    ],
)
async def test_a_job_by_name_whose_arguments_do_not_fit_goes_to_dead_at_once(
    queue: qa.Queue, args: tuple[Any, ...], kwargs: dict[str, Any], fragment: str
) -> None:
    runs: list[Any] = []

    @queue.task(name="billing.charge", retries=5)
    async def charge(order: Order, amount: Decimal) -> None:
        runs.append(order)

    handle = await queue.enqueue("billing.charge", *args, **kwargs)
    await drain(queue)
    error = await dead_error(handle)
    assert fragment in error
    assert runs == []


async def test_a_result_that_does_not_fit_its_annotation_fails_clearly(queue: qa.Queue) -> None:
    @queue.task(retries=3)
    async def price() -> Decimal:
        return "cheap"  # type: ignore[return-value]

    @queue.task(retries=3)
    async def when() -> datetime:
        return object()  # type: ignore[return-value]

    handles = [await price.enqueue(), await when.enqueue()]
    await drain(queue)
    price_error, when_error = [await dead_error(handle) for handle in handles]
    assert "the result (str) cannot be encoded" in price_error
    assert "does not fit the return annotation Decimal" in price_error
    assert "the result (object) cannot be encoded" in when_error
    assert "datetime" in when_error


# -- what stays as it was ----------------------------------------------------------------------


async def test_unannotated_and_plain_json_arguments_stay_json(queue: qa.Queue) -> None:
    seen: list[Any] = []

    @queue.task
    async def untyped(a, b, *rest, **more):  # type: ignore[no-untyped-def]
        seen.append((a, b, rest, more))
        return (a, b)

    @queue.task
    async def plain(a: Any, b: list[int], c: dict[str, Any] | None = None) -> list[int]:
        seen.append((a, b, c))
        return b

    first = await untyped.enqueue((1, 2), "x", 3, k={"n": None})
    second = await plain.enqueue((1, 2), [3], c={"d": 1.5})
    await drain(queue)
    # Tuples come back as lists, as JSON has them.
    assert seen == [([1, 2], "x", (3,), {"k": {"n": None}}), ([1, 2], [3], {"d": 1.5})]
    assert await first.result(timeout=5) == [[1, 2], "x"]
    assert await second.result(timeout=5) == [3]
    with pytest.raises(qa.EncodeError, match=r"argument 0 \(object\) cannot be encoded"):
        await untyped.enqueue(object(), 1)
    # A datetime unannotated goes as orjson writes it: an ISO string.
    third = await untyped.enqueue(NOW, 1)
    await drain(queue)
    assert await third.result(timeout=5) == ["2024-05-17T12:30:15.123456+00:00", 1]


def test_plain_json_annotations_skip_pydantic() -> None:
    for annotation in (int, str, float, bool, None, Any, list[int], dict[str, list[Any]]):
        assert is_plain(annotation)
    assert is_plain(int | None)
    for annotation in (datetime, tuple[int], set[int], dict[int, str], list[Decimal], Color):
        assert not is_plain(annotation)


@pytest.mark.parametrize("codec", [PickleCodec(), MsgpackCodec()], ids=["pickle", "msgpack"])
async def test_a_custom_codec_carries_typed_values_and_its_own(
    redis_url: str, codec: qa.Codec
) -> None:
    async with qa.Queue(redis_url, name=unique_name(), codec=codec) as queue:
        seen: list[Any] = []

        @queue.task
        async def charge(order: Order, when: datetime, raw: Any) -> tuple[Order, datetime]:
            seen.append((order, when, raw))
            return order, when

        handle = await charge.enqueue(ORDER, NOW, (1, b"x"))
        await drain(queue)
        # Typed values as the annotations say; an unannotated one as the codec keeps it.
        assert seen == [(ORDER, NOW, (1, b"x"))]
        assert await handle.result(timeout=5) == (ORDER, NOW)


async def test_an_unresolvable_annotation_leaves_its_parameter_plain(
    queue: qa.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Any] = []

    async def later(value: NotDefinedAnywhere, when: datetime) -> None:  # type: ignore[name-defined]  # noqa: F821
        seen.append((value, when))

    task = queue.task(later)
    await task.enqueue({"a": 1}, NOW)
    await drain(queue)
    assert seen == [({"a": 1}, NOW)]
    assert "the annotation of parameter 'value' cannot be resolved" in caplog.text


def test_a_typed_call_checks_binding_like_python() -> None:
    def fn(a: int, /, b: int, *, c: int, d: int = 0) -> None: ...

    typed = TypedCall(inspect.signature(fn), {}, None)
    typed.check([1, 2], {"c": 3})
    typed.check([1], {"b": 2, "c": 3, "d": 4})
    for args, kwargs in [
        ([1, 2], {}),
        ([], {"a": 1, "b": 2, "c": 3}),
        ([1, 2, 3], {"c": 3}),
        ([1, 2], {"c": 3, "b": 2}),
        ([1, 2], {"c": 3, "e": 5}),
    ]:
        with pytest.raises(TypeError):
            typed.check(args, kwargs)
        with pytest.raises(TypeError):
            inspect.signature(fn).bind(*args, **kwargs)


async def test_literal_and_annotated_constraints_are_checked_at_enqueue(queue: qa.Queue) -> None:
    @queue.task
    async def ship(
        mode: Literal["air", "sea"], boxes: Annotated[int, pydantic.Field(gt=0)]
    ) -> None: ...

    with pytest.raises(
        qa.EncodeError, match=r"argument 0 \(mode\): Input should be 'air' or 'sea'"
    ):
        await ship.enqueue("rail", 1)  # type: ignore[arg-type]
    with pytest.raises(
        qa.EncodeError, match=r"argument 1 \(boxes\): Input should be greater than 0"
    ):
        await ship.enqueue("air", 0)
    assert (await queue.stats()).ready == 0
    await ship.enqueue("sea", 2)
    await drain(queue)
    assert (await queue.stats()).processed == 1
