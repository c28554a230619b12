"""How job arguments and results become bytes: JSON (orjson) by default, pluggable."""

from __future__ import annotations

import functools
import inspect
import math
import sys
import types
import typing
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any, Protocol, Union, runtime_checkable

import orjson
from pydantic import ConfigDict, PydanticUserError, TypeAdapter, ValidationError

__all__ = ["Codec", "JsonCodec", "TypedCall", "decode_payload", "is_plain"]


@runtime_checkable
class Codec(Protocol):
    """Turns job arguments and results into bytes and back.

    ``encode`` raises ``TypeError`` or ``ValueError`` for a value it cannot encode; the
    queue turns that into an :class:`~queue_async.EncodeError` naming the task.
    """

    def encode(self, value: Any) -> bytes:
        """Encode one value."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode what :meth:`encode` produced."""
        ...


class JsonCodec:
    """JSON through orjson: fast, strict (no NaN, keys must be strings), and readable in
    redis-cli. Tuples come back as lists; datetimes come back as ISO strings."""

    def encode(self, value: Any) -> bytes:
        try:
            data = orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise TypeError(str(exc)) from exc
        # orjson writes NaN and infinities as null: refuse them rather than change the value.
        if b"null" in data and value is not None and _has_non_finite(value):
            raise ValueError("NaN and infinite floats cannot be encoded as JSON")
        return data

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


_ARGS_TYPES = (list, tuple)


def decode_payload(codec: Codec, payload: bytes) -> tuple[list[Any], dict[str, Any]]:
    """A job's stored ``[args, kwargs]``; raises ``ValueError`` for anything else."""
    try:
        args, kwargs = codec.decode(payload)
    except Exception as exc:  # a codec may raise anything on garbage
        raise ValueError(f"payload cannot be decoded: {exc!r}") from exc
    # A codec that round-trips tuples (pickle, msgpack with use_list=False) gives them back.
    # A tuple of types, not list | tuple: that builds a union object on every call.
    if not isinstance(args, _ARGS_TYPES) or not isinstance(kwargs, dict):
        # One error type for every kind of bad payload, so callers catch one thing.
        raise ValueError("payload cannot be decoded: it is not [args, kwargs]")  # noqa: TRY004
    return list(args), kwargs


# -- typed arguments and results ---------------------------------------------------------------
#
# Values travel as JSON-compatible Python (what ``TypeAdapter.dump_python(mode="json")`` gives),
# whatever the codec: a custom codec encodes that, and the annotations bring the types back on
# the other side. Plain JSON annotations skip pydantic altogether: their values go as they are.

_PLAIN = frozenset(
    [int, str, float, bool, type(None), None, Any, object, list, dict, inspect.Parameter.empty]
)
_PLAIN_ORIGINS = frozenset([list, Sequence, MutableSequence])
_MAP_ORIGINS = frozenset([dict, Mapping, MutableMapping])
_UNIONS = frozenset([Union, types.UnionType])

# Bytes as base64 (not UTF-8, which refuses arbitrary bytes); NaN and infinities as strings
# (JSON has none of them). Models and dataclasses keep their own config.
_CONFIG = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", ser_json_inf_nan="strings")


def is_plain(annotation: Any) -> bool:
    """True for annotations whose values JSON keeps as they are: ``int``, ``str``, ``float``,
    ``bool``, ``None``, ``Any``, none at all, and lists, string-keyed dicts and unions of those.
    Their values skip pydantic (no conversion, no check)."""
    try:
        if annotation in _PLAIN:
            return True
    except TypeError:  # an unhashable annotation
        return False
    origin = typing.get_origin(annotation)
    if origin is None:
        return False
    params = typing.get_args(annotation)
    if origin in _PLAIN_ORIGINS or origin in _UNIONS:
        return all(is_plain(param) for param in params)
    if origin in _MAP_ORIGINS:
        return len(params) == 2 and params[0] in (str, Any) and is_plain(params[1])
    return False


class _Typed:
    """One annotation's pydantic adapter: to JSON-compatible values and back."""

    __slots__ = ("adapter", "dump", "name", "validate")

    def __init__(self, annotation: Any) -> None:
        self.name = getattr(annotation, "__name__", None) or repr(annotation)
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(annotation, config=_CONFIG)
        except PydanticUserError:  # a model, dataclass or TypedDict: it has its own config
            adapter = TypeAdapter(annotation)
        self.adapter = adapter
        self.validate = adapter.validate_python
        self.dump = functools.partial(adapter.dump_python, mode="json")

    def to_json(self, value: Any) -> Any:
        """Validated first (so that what is sent is sure to come back), then dumped."""
        return self.dump(self.validate(value))


def _problem(exc: Exception) -> str:
    """A pydantic error on one line: where, what, and the type of what was given."""
    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors(include_url=False)[:3]:
            where = ".".join(str(part) for part in error["loc"])
            given = type(error.get("input")).__name__
            parts.append(f"{where + ': ' if where else ''}{error['msg']} (got {given})")
        more = exc.error_count() - len(parts)
        return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


class TypedCall:
    """A handler's signature compiled once: the checks and conversions its arguments and its
    result go through, at enqueue (``dump_args``), in the worker (``load_args``,
    ``dump_result``) and when the result is read (``load_result``).

    Arguments must fit the signature (nothing missing, nothing unknown); those annotated with
    other than plain JSON types (see ``is_plain``) are validated by pydantic and travel as
    JSON-compatible values. Raises ``TypeError`` for a call that does not bind and
    ``ValueError`` for a value that does not fit its annotation.
    """

    def __init__(
        self, signature: inspect.Signature, hints: Mapping[str, Any], returns: Any
    ) -> None:
        self.signature = signature
        kinds = inspect.Parameter
        params = list(signature.parameters.values())
        positional = [
            p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
        ]
        self._max_positional = len(positional)
        self._min_positional = sum(1 for p in positional if p.default is kinds.empty)
        self._var_positional = any(p.kind is kinds.VAR_POSITIONAL for p in params)
        self._var_keyword = any(p.kind is kinds.VAR_KEYWORD for p in params)
        self._keyword_index = {
            p.name: (index if p.kind is kinds.POSITIONAL_OR_KEYWORD else -1)
            for index, p in enumerate(params)
            if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
        }
        """Names that may be passed by keyword, with their positions (-1: keyword-only)."""
        self._names = tuple(p.name for p in positional)
        self._positional_names = tuple(
            p.name if p.kind is kinds.POSITIONAL_OR_KEYWORD else None for p in positional
        )
        """None for a positional-only one: it cannot come by keyword."""
        self._required_keywords = tuple(
            p.name for p in params if p.kind is kinds.KEYWORD_ONLY and p.default is kinds.empty
        )

        def typed(param: inspect.Parameter) -> _Typed | None:
            annotation = hints.get(param.name, kinds.empty)
            return None if is_plain(annotation) else _Typed(annotation)

        by_param = {p.name: typed(p) for p in params}
        self._positional_types = tuple(
            (index, t) for index, p in enumerate(positional) if (t := by_param[p.name]) is not None
        )
        self._keyword_types = {
            p.name: t
            for p in params
            if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
            and (t := by_param[p.name]) is not None
        }
        self._rest_type = next(
            (by_param[p.name] for p in params if p.kind is kinds.VAR_POSITIONAL), None
        )
        self._extra_type = next(
            (by_param[p.name] for p in params if p.kind is kinds.VAR_KEYWORD), None
        )
        self.typed_args = bool(
            self._positional_types or self._keyword_types or self._rest_type or self._extra_type
        )
        """False when every argument goes as it is (plain JSON annotations or none)."""
        # as_is: positional arguments only, as many as the signature takes, none typed.
        self._as_is = not self.typed_args and not self._required_keywords
        self._low = self._min_positional
        self._high = sys.maxsize if self._var_positional else self._max_positional
        self.result_type = None if is_plain(returns) else _Typed(returns)
        """The return annotation's adapter; None when the result goes as it is."""

    def as_is(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
        """True when these arguments surely bind and go as they are, as most do: positional
        only, as many as the signature takes, none of a typed parameter. Else ``dump_args`` or
        ``load_args`` checks and converts them."""
        return self._as_is and not kwargs and self._low <= len(args) <= self._high

    def check(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise ``TypeError`` (Python's own message) unless the arguments bind.

        A few comparisons for a call that binds; ``inspect.Signature.bind`` (ten times the
        cost) only to word the error of one that does not.
        """
        n = len(args)
        if n > self._max_positional and not self._var_positional:
            self._bind(args, kwargs)
        if n < self._min_positional:
            for name in self._positional_names[n : self._min_positional]:
                if name not in kwargs:
                    self._bind(args, kwargs)
        for name in self._required_keywords:
            if name not in kwargs:
                self._bind(args, kwargs)
        if kwargs:
            keyword_index = self._keyword_index
            for name in kwargs:
                index = keyword_index.get(name)
                if (index is None and not self._var_keyword) or (
                    index is not None and 0 <= index < n
                ):
                    self._bind(args, kwargs)

    def _bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self.signature.bind(*args, **kwargs)

    def dump_args(
        self, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[Sequence[Any], dict[str, Any]]:
        """The arguments checked, as JSON-compatible values, for the codec."""
        self.check(args, kwargs)
        if not self.typed_args:
            return args, kwargs
        return self._convert(args, kwargs, "to_json")

    def load_args(
        self, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Decoded arguments checked and brought back to their annotated types."""
        self.check(args, kwargs)
        if not self.typed_args:
            return args, kwargs
        loaded, kwargs = self._convert(args, kwargs, "validate")
        return list(loaded), kwargs

    def _convert(
        self, args: Sequence[Any], kwargs: dict[str, Any], how: str
    ) -> tuple[list[Any], dict[str, Any]]:
        out = list(args)
        n = len(out)
        where = ""
        try:
            for index, param in self._positional_types:
                if index < n:
                    where = f"argument {index} ({self._names[index]})"
                    out[index] = getattr(param, how)(out[index])
            rest = self._rest_type
            if rest is not None:
                for index in range(self._max_positional, n):
                    where = f"argument {index}"
                    out[index] = getattr(rest, how)(out[index])
            if kwargs:
                kwargs = dict(kwargs)
                for name, value in kwargs.items():
                    typed = self._keyword_types.get(name, self._extra_type)
                    if typed is not None:
                        where = f"keyword argument {name!r}"
                        kwargs[name] = getattr(typed, how)(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {_problem(exc)}") from exc
        return out, kwargs

    def dump_result(self, value: Any) -> Any:
        """A handler's result checked against its return annotation, JSON-compatible."""
        typed = self.result_type
        if typed is None:
            return value
        try:
            return typed.to_json(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"it does not fit the return annotation {typed.name}: {_problem(exc)}"
            ) from exc

    def load_result(self, value: Any) -> Any:
        """A decoded result back as its annotated type."""
        typed = self.result_type
        return value if typed is None else typed.validate(value)
