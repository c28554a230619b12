"""Each script's header comment is its contract: the wrapper must pass what it declares."""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pytest

import queue_async as qa
from queue_async.broker import scripts as _scripts
from queue_async.broker.keys import QueueKeys
from queue_async.broker.scripts import LIBRARY, SCRIPTS, Scripts
from queue_async.broker.wire import pack_job

pytestmark = pytest.mark.anyio

LUA = resources.files("queue_async.broker") / "lua"
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}
NUMBERS |= {"eight": 8, "nine": 9, "ten": 10}
SCRIPT_NAMES = sorted(SCRIPTS)


@dataclass
class Header:
    """What a script's leading comment declares."""

    lines: list[str]
    keys: dict[int, str] = field(default_factory=dict)
    """KEYS index -> the first word after it (a QueueKeys field name, for most)."""
    optional_keys: set[int] = field(default_factory=set)
    """KEYS declared "optional" (trailing: a caller may leave them out)."""
    variadic_keys_from: int | None = None
    """``KEYS[n..]``: one key per repeated ARGV group from here on (a job's hash)."""
    argv: set[int] = field(default_factory=set)
    """Fixed ARGV indexes."""
    optional: set[int] = field(default_factory=set)
    """Those of them declared "optional" (trailing: a caller may leave them out)."""
    variadic_from: int | None = None
    """``ARGV[n..]``: repeated groups start here..."""
    group: int | None = None
    """...of this many fields ("nine fields per job")."""


def header(name: str) -> Header:
    lines = []
    for line in (LUA / f"{name}.lua").read_text().splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    head = Header(lines)
    text = "\n".join(lines)
    for index, word in re.findall(r"KEYS\[(\d+)\]\s+(\S+)", text):
        head.keys[int(index)] = word
    for index in re.findall(r"KEYS\[(\d+)\]\s+\S+ optional\b", text):
        head.optional_keys.add(int(index))
    for index in re.findall(r"KEYS\[(\d+)\.\.\]", text):
        head.variadic_keys_from = int(index)
    for index, dots in re.findall(r"ARGV\[(\d+)(\.\.)?\]", text):
        if dots:
            head.variadic_from = int(index)
        else:
            head.argv.add(int(index))
    for index in re.findall(r"ARGV\[(\d+)\] optional\b", text):
        head.optional.add(int(index))
    group = re.search(r"\b(\w+) fields? per job", text)
    if group:
        head.group = NUMBERS[group.group(1)]
    return head


def lua_files() -> list[str]:
    """The scripts' files (the units in includes/ are not scripts)."""
    return sorted(p.name for p in LUA.iterdir() if p.name.endswith(".lua"))


def test_every_lua_script_is_loaded_by_the_wrapper() -> None:
    assert {name.removesuffix(".lua") for name in lua_files()} == set(SCRIPTS)
    for name, script in SCRIPTS.items():
        units = [(LUA / "includes" / f"{unit}.lua").read_text() for unit in script.units]
        assert script.source == "\n".join([*units, (LUA / f"{name}.lua").read_text()]), name


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_header_declares_contiguous_keys_and_argv(name: str) -> None:
    head = header(name)
    assert head.lines[0].startswith(f"-- {name}.lua: ")
    assert sorted(head.keys) == list(range(1, len(head.keys) + 1)), head.keys
    assert head.keys or head.variadic_keys_from == 1, (
        f"{name}.lua declares no KEYS: a cluster client could not route it"
    )
    if head.variadic_keys_from is not None:
        assert head.variadic_keys_from == len(head.keys) + 1
        assert head.variadic_from is not None, f"{name}.lua: KEYS[n..] without ARGV[n..]"
    fixed = sorted(head.argv)
    assert fixed == list(range(1, len(fixed) + 1)), fixed
    if head.variadic_from is not None:
        assert head.variadic_from == len(fixed) + 1
        assert head.group, f"{name}.lua: ARGV[{head.variadic_from}..] without 'N fields per job'"


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_declares_minimum_server_and_reply(name: str) -> None:
    """(Units declare their minimum server too: see test_units.py.)"""
    lines = header(name).lines
    minimum = [line for line in lines if re.match(r"-- Minimum server: \S", line)]
    assert len(minimum) == 1, f"{name}.lua needs one '-- Minimum server: ...' header line"
    assert re.search(r"Redis \d+\.\d+", minimum[0])
    replies = [line for line in lines if re.match(r"-- Reply: \S", line)]
    assert len(replies) == 1, f"{name}.lua needs one '-- Reply: ...' header line"


# -- what the wrapper sends ---------------------------------------------------------------


@dataclass
class Sent:
    script: str
    keys: list[str]
    args: list[Any]


def _record(queue: qa.Queue, monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    """Record every script call of this one client (FCALL or EVALSHA, plain and in
    pipelines); calls still run."""
    sent: list[Sent] = []
    names = {script.sha: name for name, script in SCRIPTS.items()}
    names.update({LIBRARY.function(script): name for name, script in SCRIPTS.items()})

    def note(script: str, numkeys: int, rest: tuple[Any, ...]) -> None:
        sent.append(Sent(names[script], list(rest[:numkeys]), list(rest[numkeys:])))

    def recording(call: Any) -> Any:
        def record(script: str, numkeys: int, *rest: Any) -> Any:
            note(script, numkeys, rest)
            return call(script, numkeys, *rest)

        return record

    real_pipeline = queue.client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        pipe.evalsha = recording(pipe.evalsha)
        pipe.fcall = recording(pipe.fcall)
        return pipe

    monkeypatch.setattr(queue.client, "evalsha", recording(queue.client.evalsha))
    monkeypatch.setattr(queue.client, "fcall", recording(queue.client.fcall))
    monkeypatch.setattr(queue.client, "pipeline", pipeline)
    return sent


def _group_size(method: str) -> int:
    """Fields per job of the script a wrapper method calls (enqueue_chunks calls enqueue)."""
    size = header(method.removesuffix("_chunks")).group
    assert size, f"Scripts.{method} takes fields but its script declares no group size"
    return size


SAMPLE_JOB = pack_job("sample", b"", "task", b"[[],{}]")


def _sample_args(method: str) -> list[Any]:
    """Plausible arguments for a wrapper method, from its type hints: every number 1, which
    each script accepts (a count, a length in ms, a field of a job that does not exist)."""
    hints = typing.get_type_hints(getattr(Scripts, method), vars(_scripts))
    args: list[Any] = []
    parameters = list(inspect.signature(getattr(Scripts, method)).parameters.values())[1:]
    for param in (p.name for p in parameters if p.kind is not p.KEYWORD_ONLY):
        hint = hints[param]
        if param == "cursor":  # a listing's start (any other text is refused)
            args.append("")
        elif param == "state":  # one a listing knows
            args.append("dead")
        elif hint is int:
            args.append(1)
        elif hint is str:
            args.append("x")
        elif hint is bytes:  # enqueue's and cron_tick's packed jobs
            args.append(SAMPLE_JOB)
        elif hint == list[str]:  # job ids
            args.append(["x", "y"])
        elif hint == list[bytes]:
            args.append([SAMPLE_JOB] * 2)
        elif hint == list[_scripts.Arg]:
            args.append([1] * _group_size(method))
        elif hint == list[list[_scripts.Arg]]:
            args.append([[1] * _group_size(method)] * 2)
        else:
            raise AssertionError(f"no sample for Scripts.{method}({param}: {hint})")
    return args


NOT_SCRIPT_CALLS = {"publish_entry"}
"""Public methods that load the scripts rather than call one."""


def _wrapper_methods() -> list[str]:
    return [
        name
        for name, member in vars(Scripts).items()
        if not name.startswith("_")
        and name not in NOT_SCRIPT_CALLS
        and inspect.iscoroutinefunction(member)
    ]


async def test_wrapper_passes_the_keys_and_arguments_each_header_declares(
    queue: qa.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _record(queue, monkeypatch)
    called: dict[str, list[Sent]] = {}
    for method in _wrapper_methods():
        start = len(sent)
        await getattr(queue._broker.scripts, method)(*_sample_args(method))
        assert len(sent) > start, f"Scripts.{method} called no script through queue.client"
        for call in sent[start:]:
            called.setdefault(call.script, []).append(call)

    assert set(called) == set(SCRIPT_NAMES), "some script has no wrapper method"
    key_fields = set(QueueKeys.__dataclass_fields__)
    for name, calls in called.items():
        head = header(name)
        for call in calls:
            if head.variadic_keys_from is None:
                required = len(head.keys) - len(head.optional_keys)
                assert required <= len(call.keys) <= len(head.keys), (name, call.keys, head.keys)
            else:
                assert head.group is not None
                jobs = (len(call.args) - len(head.argv)) // head.group
                assert len(call.keys) == len(head.keys) + jobs, (name, call.keys, call.args)
                for key in call.keys[len(head.keys) :]:
                    assert key.startswith(queue._broker.keys.prefix), (name, key)
            for index, word in head.keys.items():
                if index > len(call.keys):
                    assert index in head.optional_keys, (name, index)
                elif word in key_fields:
                    assert call.keys[index - 1] == getattr(queue._broker.keys, word), (name, index)
                else:
                    assert call.keys[index - 1].startswith(queue._broker.keys.prefix), (name, index)
            if head.variadic_from is None:
                required = len(head.argv) - len(head.optional)
                assert required <= len(call.args) <= len(head.argv), (name, call.args)
            else:
                assert head.group is not None
                extra = len(call.args) - len(head.argv)
                assert extra > 0, (name, call.args)
                assert extra % head.group == 0, (name, call.args)
            if any(line.startswith("-- ARGV[1] key prefix") for line in head.lines):
                assert call.args[0] == queue._broker.keys.prefix, name
