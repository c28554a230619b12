"""The task decorator's product: ``Task[P, R]``, typed enqueue calls, and job specs."""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from queue_async.codec import TypedCall
from queue_async.context import JobContext
from queue_async.options import EnqueueOptions, TaskOptions, to_ms
from queue_async.producer.handle import JobHandle

if TYPE_CHECKING:
    from queue_async.producer.queue import Queue

__all__ = ["JobSpec", "Task", "TaskCall"]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("queue_async")


def wants_context(fn: Callable[..., Any]) -> bool:
    """True if the handler's first parameter is annotated ``JobContext``.

    A handler may leave the context out; it is decided once, at decoration, by the annotation
    (an unannotated first parameter named ``ctx`` counts too).
    """
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return False
    first = params[0]
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = {}
    annotation = hints.get(first.name, first.annotation)
    if annotation is JobContext or annotation == "JobContext":
        return True
    return annotation is inspect.Parameter.empty and first.name == "ctx"


def typed_call(fn: Callable[..., Any], name: str, takes_context: bool) -> TypedCall:
    """The handler's signature without its context, with its annotations resolved.

    An annotation that cannot be resolved (a name imported under ``TYPE_CHECKING`` only, a
    class local to a function) leaves its parameter as unannotated, and says so in the log.
    """
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    if takes_context:
        params = params[1:]
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - any failure to evaluate: take them one by one
        hints = {}
        for param in [*params, None]:
            key = "return" if param is None else param.name
            annotation = signature.return_annotation if param is None else param.annotation
            if isinstance(annotation, str):
                annotation = _resolved(fn, annotation)
                if annotation is None:
                    logger.warning(
                        "task %s: the annotation of %s cannot be resolved; its values travel "
                        "as plain JSON, unchecked",
                        name,
                        "its result" if param is None else f"parameter {key!r}",
                    )
                    continue
            if annotation is not inspect.Parameter.empty:
                hints[key] = annotation
    returns = hints.get("return", inspect.Parameter.empty)
    module = getattr(fn, "__module__", None)
    shown = [
        p.replace(annotation=_Shown(p.annotation, module))
        if p.annotation is not inspect.Parameter.empty
        else p
        for p in params
    ]
    # The signature as errors show it: annotations as written, no return annotation.
    signature = signature.replace(parameters=shown, return_annotation=inspect.Parameter.empty)
    return TypedCall(signature, hints, returns)


class _Shown:
    """An annotation as ``inspect`` prints it, but a string one without its quotes."""

    def __init__(self, annotation: Any, module: str | None) -> None:
        self.text = (
            annotation
            if isinstance(annotation, str)
            else inspect.formatannotation(annotation, base_module=module)
        )

    def __repr__(self) -> str:
        return self.text


def _resolved(fn: Callable[..., Any], annotation: str) -> Any:
    """What ``get_type_hints`` does for one annotation; None if it cannot."""
    try:
        return eval(annotation, getattr(fn, "__globals__", {}))  # noqa: S307
    except Exception:  # noqa: BLE001 - a name not defined, or not an expression
        return None


# Not frozen: one is made for every enqueue, and a frozen dataclass's __init__ costs four
# times as much. Treat it as read-only all the same.
@dataclass(slots=True)
class JobSpec(Generic[R]):
    """One job to enqueue, not yet sent: what ``task.call(...)`` returns for ``enqueue_many``
    (read-only)."""

    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: EnqueueOptions | None = None
    defaults: TaskOptions | None = field(default=None, compare=False)
    typed: TypedCall | None = field(default=None, compare=False)
    """The task's signature, when the spec was made from the task: its arguments are
    checked and encoded by their annotations at enqueue."""


class Task(Generic[P, R]):
    """A registered handler. Enqueue it with ``await task.enqueue(...)``."""

    def __init__(
        self,
        queue: Queue,
        fn: Callable[..., Any],
        name: str,
        options: TaskOptions,
    ) -> None:
        self.queue = queue
        self.fn = fn
        self.name = name
        self.task_options = options
        # Read for every job the worker runs: converted once here.
        self.timeout_ms = None if options.timeout is None else to_ms(options.timeout)
        self.keep_ms = to_ms(options.keep_result)
        self.takes_context = wants_context(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    @functools.cached_property
    def typed(self) -> TypedCall:
        """The handler's signature compiled for its arguments and result, on first use (by
        then the names its annotations refer to are defined); an attribute after that."""
        return typed_call(self.fn, self.name, self.takes_context)

    def __repr__(self) -> str:
        return f"<Task {self.name} on queue {self.queue.name!r}>"

    def call(self, /, *args: P.args, **kwargs: P.kwargs) -> JobSpec[R]:
        """A job of this task with these arguments, for ``queue.enqueue_many``."""
        return JobSpec(self.name, args, kwargs, None, self.task_options, self.typed)

    async def enqueue(self, /, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue one job now and return its handle."""
        return await self.queue._enqueue_now(self.call(*args, **kwargs))

    def options(
        self,
        *,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
        priority: int | None = None,
        job_id: str | None = None,
        retries: int | None = None,
        timeout: float | timedelta | None = None,
        keep_result: float | timedelta | None = None,
        unique: bool | None = None,
        unique_key: str | None = None,
        unique_for: float | timedelta | None = None,
        unique_while_running: bool | None = None,
        headers: dict[str, str] | None = None,
        replace: bool | None = None,
        shard_key: str | None = None,
    ) -> TaskCall[P, R]:
        """This task with per-enqueue options; invalid values raise ``ValidationError``.

        Args:
            delay: run no earlier than this many seconds (or timedelta) from now.
            at: run no earlier than this datetime (naive means UTC).
            priority: lower runs first; default the task's.
            job_id: an explicit id; enqueueing an id that exists returns that job's handle.
            retries: tries after the first, overriding the task's.
            timeout: seconds (or timedelta) per try, overriding the task's.
            keep_result: how long the result is kept, overriding the task's.
            unique: while a job of this task with equal arguments waits (ready or
                scheduled), enqueueing returns its handle instead of adding a job.
            unique_key: the same with a key of your choosing, shared across the queue.
            unique_for: the longest the key holds (default: until its job finishes).
            unique_while_running: the key also holds while its job runs.
            headers: text metadata for the job (``JobContext.headers``, ``Job.headers``).
            replace: with ``job_id``, replace a finished job (done, dead, cancelled, aborted)
                of that id; a job that waits or runs is kept and returned.
            shard_key: on a sharded queue, jobs of one key go to one shard, and so start in
                the order they were enqueued (within a priority); not with ``job_id``.
        """
        opts = EnqueueOptions.model_validate(
            {
                "delay": delay,
                "at": at,
                "priority": priority,
                "job_id": job_id,
                "retries": retries,
                "timeout": timeout,
                "keep_result": keep_result,
                "unique": unique,
                "unique_key": unique_key,
                "unique_for": unique_for,
                "unique_while_running": unique_while_running,
                "headers": headers,
                "replace": replace,
                "shard_key": shard_key,
            }
        )
        return TaskCall(self, opts)

    async def run(self, ctx: JobContext, /, *args: Any, **kwargs: Any) -> Any:
        """Call the handler as the worker does (sync handlers are called here directly)."""
        call_args = (ctx, *args) if self.takes_context else args
        if self.is_async:
            return await self.fn(*call_args, **kwargs)
        return self.fn(*call_args, **kwargs)


class TaskCall(Generic[P, R]):
    """A task with enqueue options bound, from ``task.options(...)``."""

    def __init__(self, task: Task[P, R], options: EnqueueOptions) -> None:
        self.task = task
        self.enqueue_options = options

    def call(self, /, *args: P.args, **kwargs: P.kwargs) -> JobSpec[R]:
        """A job with these arguments and the bound options, for ``queue.enqueue_many``."""
        task = self.task
        return JobSpec(task.name, args, kwargs, self.enqueue_options, task.task_options, task.typed)

    async def enqueue(self, /, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue one job with the bound options."""
        return await self.task.queue._enqueue_now(self.call(*args, **kwargs))
