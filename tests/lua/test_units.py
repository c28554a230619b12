"""The Lua units in lua/includes/ and what the scripts take from them.

Static checks over the sources (every helper a file uses comes from a unit it needs; key
names are built in includes/keys.lua only), the loader's resolution of needs, and the key
names the Lua side builds against QueueKeys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import pytest

import queue_async as qa
from queue_async.broker.keys import QueueKeys
from queue_async.broker.scripts import (
    DOING,
    LIBRARY,
    SCRIPTS,
    UNITS,
    FunctionLibrary,
    LuaDependencyError,
    LuaScript,
    LuaUnit,
    declared_needs,
    header,
    in_dependency_order,
)
from tests.lua.test_headers import _record, _sample_args, _wrapper_methods

pytestmark = pytest.mark.anyio

LUA = resources.files("queue_async.broker") / "lua"

# Comments and string literals, which the checks below must not read as code.
_NOT_CODE = re.compile(
    r"""--\[(=*)\[.*?\]\1\]|--[^\n]*|\[(=*)\[.*?\]\2\]|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*\"""",
    re.DOTALL,
)
_TOP_FUNCTION = re.compile(r"^local function (\w+)", re.MULTILINE)
_TOP_LOCALS = re.compile(r"^local ((?:\w+)(?:\s*,\s*\w+)*)\s*=", re.MULTILINE)
_LOCALS = re.compile(r"\blocal\s+(?:function\s+(\w+)|((?:\w+)(?:\s*,\s*\w+)*))")
_PARAMETERS = re.compile(r"\bfunction\b\s*[\w.:]*\s*\(([^)]*)\)")
_LOOP_NAMES = re.compile(r"\bfor\s+((?:\w+)(?:\s*,\s*\w+)*)\s+(?:=|in)\b")


def code_of(text: str) -> str:
    """Lua source with comments dropped and every string literal made ''."""
    return _NOT_CODE.sub(lambda m: "''" if m.group(0)[0] in "'\"[" else "", text)


@dataclass(frozen=True)
class Source:
    """One Lua file: a unit or a script."""

    label: str
    """includes/<unit>.lua or <script>.lua."""
    text: str
    needs: tuple[str, ...]
    available: frozenset[str]
    """The units whose helpers it may use: its own (for a unit) and its needs, transitively."""
    unit: str | None = None

    @property
    def code(self) -> str:
        return code_of(self.text)


@cache
def sources() -> tuple[Source, ...]:
    found = [
        Source(
            f"includes/{name}.lua",
            unit.source,
            unit.needs,
            frozenset([name, *in_dependency_order(name, unit.needs, UNITS)]),
            name,
        )
        for name, unit in UNITS.items()
    ]
    found += [
        Source(f"{name}.lua", script.body, script.needs, frozenset(script.units))
        for name, script in SCRIPTS.items()
    ]
    return tuple(found)


def unit_names(code: str) -> list[tuple[str, int]]:
    """The names a unit defines at its top level, with where each definition starts."""
    names = [(m.group(1), m.start()) for m in _TOP_FUNCTION.finditer(code)]
    for m in _TOP_LOCALS.finditer(code):
        names += [(name.strip(), m.start()) for name in m.group(1).split(",")]
    return names


@cache
def defined_by() -> dict[str, str]:
    """Every top-level name of every unit -> its unit."""
    owner: dict[str, str] = {}
    for name, unit in UNITS.items():
        for defined, _ in unit_names(code_of(unit.source)):
            assert defined not in owner, f"{defined} is defined by {owner[defined]} and {name}"
            owner[defined] = name
    return owner


def uses(code: str, name: str) -> list[int]:
    """Where code reads or calls ``name`` (not as a table field, nor as the key of a table
    constructor or the target of an assignment)."""
    pattern = rf"(?<![\w.:]){re.escape(name)}\b(?!\s*=(?!=))"
    return [m.start() for m in re.finditer(pattern, code)]


def provides(text: str) -> set[str]:
    """The names on a unit's ``-- provides:`` line and its continuation lines."""
    lines = header(text)
    start = next(i for i, line in enumerate(lines) if line.startswith("-- provides:"))
    words = lines[start].removeprefix("-- provides:").split()
    for line in lines[start + 1 :]:
        if not line.startswith("--   "):
            break
        words += line.removeprefix("--").split()
    return set(words)


def minimum_server(text: str) -> tuple[int, ...] | None:
    for line in header(text):
        m = re.match(r"-- Minimum server: Redis (\d+)\.(\d+)", line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


SOURCE_LABELS = [source.label for source in sources()]


def source(label: str) -> Source:
    return next(s for s in sources() if s.label == label)


# -- what each file may use --------------------------------------------------------------


@pytest.mark.parametrize("label", SOURCE_LABELS)
def test_every_helper_a_file_uses_comes_from_a_unit_it_needs(label: str) -> None:
    src = source(label)
    code = src.code
    missing = {
        f"{name} (from {unit})"
        for name, unit in defined_by().items()
        if unit not in src.available and uses(code, name)
    }
    assert not missing, f"{label} uses helpers of units it does not need: {sorted(missing)}"


@pytest.mark.parametrize("label", SOURCE_LABELS)
def test_every_declared_need_is_used(label: str) -> None:
    """A need that nothing in the file uses only makes the file's source longer."""
    src = source(label)
    code = src.code
    for need in src.needs:
        names = [name for name, unit in defined_by().items() if unit == need]
        assert any(uses(code, name) for name in names), f"{label} needs {need} but uses none of it"


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_a_unit_defines_each_name_before_it_uses_it(unit: str) -> None:
    """No forward declarations: within a unit, a helper is called only below its definition."""
    code = code_of(UNITS[unit].source)
    for name, at in unit_names(code):
        early = [use for use in uses(code, name) if use < at]
        assert not early, f"includes/{unit}.lua uses {name} above its definition"


@pytest.mark.parametrize("label", SOURCE_LABELS)
def test_no_file_shadows_a_unit_helper(label: str) -> None:
    """A local, parameter or loop variable named like a unit's helper would hide it."""
    src = source(label)
    code = src.code
    own = {name for name, _ in unit_names(code)} if src.unit else set()
    declared: set[str] = set()
    for m in _LOCALS.finditer(code):
        declared |= {n.strip() for n in (m.group(1) or m.group(2)).split(",")}
    for pattern in (_PARAMETERS, _LOOP_NAMES):
        for m in pattern.finditer(code):
            declared |= {n.strip() for n in m.group(1).split(",") if n.strip()}
    shadowing = (declared - own) & set(defined_by())
    assert not shadowing, f"{label} declares names that units define: {sorted(shadowing)}"


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_header_says_what_it_provides_and_needs(unit: str) -> None:
    text = UNITS[unit].source
    assert header(text)[0].startswith(f"-- includes/{unit}.lua: ")
    defined = {name for name, _ in unit_names(code_of(text))}
    assert provides(text) == defined
    if "redis.call" in text:
        assert minimum_server(text), f"includes/{unit}.lua calls redis: declare its minimum server"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_script_needs_no_newer_server_than_it_declares(name: str) -> None:
    script = SCRIPTS[name]
    declared = minimum_server(script.body)
    assert declared is not None
    for unit in script.units:
        needed = minimum_server(UNITS[unit].source)
        assert needed is None or needed <= declared, (name, unit, needed)


def test_every_unit_is_needed_by_some_script() -> None:
    assert set(LIBRARY.units) == set(UNITS)


def test_every_script_says_what_it_does_for_error_messages() -> None:
    assert set(DOING) == set(SCRIPTS)


# -- keys ----------------------------------------------------------------------------------

KEY_UNIT = "includes/keys.lua"


@pytest.mark.parametrize("label", [label for label in SOURCE_LABELS if label != KEY_UNIT])
def test_only_the_keys_unit_builds_key_names(label: str) -> None:
    code = source(label).code
    assert not re.search(r"\bprefix\s*\.\.", code), f"{label}: use a function of {KEY_UNIT}"
    # Nor a key's suffix joined to anything else (ARGV[1] .. 'meta', p .. 'job:' .. id).
    suffixes = set(re.findall(r"prefix \.\. '([^']+)'", UNITS["keys"].source))
    assert suffixes
    text = re.sub(r"--[^\n]*", "", source(label).text)
    for suffix in suffixes:
        joined = rf"\.\.\s*'{re.escape(suffix)}'|'{re.escape(suffix)}'\s*\.\."
        assert not re.search(joined, text), f"{label} builds a {suffix!r} key: use {KEY_UNIT}"


# Lua key function -> its arguments after the prefix, and QueueKeys' name for the same key.
BOTH_SIDES: dict[str, tuple[tuple[str, ...], str]] = {
    "job_key": (("j-1",), "job:j-1"),
    "fifo_key": ((), "fifo"),
    "fresh_key": ((), "fresh"),
    "meta_key": ((), "meta"),
    "gates_key": ((), "gates"),
    "gated_key": ((), "gated"),
    "held_key": (("t:some.task",), "held:t:some.task"),
    "worker_key": (("w-1",), "worker:w-1"),
    "inbox_key": (("w-1",), "inbox:w-1"),
    "retrying_key": ((), "retrying"),
    "dead_key": ((), "dead"),
    "done_key": ((), "done"),
    "done_channel": ((), "done"),
    "ended_channel": ((), "ended"),
}
LUA_ONLY: dict[str, tuple[str, ...]] = {
    "idle_key": ("w-1",),
    "unique_key": ("u-1",),
    "running_key": (),
    "throttled_key": (),
    "bucket_key": (),
    "watched_key": (),
}


def python_name(keys: QueueKeys, lua: str) -> str:
    return {
        "job_key": keys.job("j-1"),
        "fifo_key": keys.fifo,
        "fresh_key": keys.fresh,
        "meta_key": keys.meta,
        "gates_key": keys.gates,
        "gated_key": keys.gated,
        "held_key": keys.held("t:some.task"),
        "worker_key": keys.worker("w-1"),
        "inbox_key": keys.inbox("w-1"),
        "retrying_key": keys.retrying,
        "dead_key": keys.dead,
        "done_key": keys.done,
        "done_channel": keys.done_channel,
        "ended_channel": keys.ended_channel,
    }[lua]


def test_every_lua_key_function_is_matched_to_queue_keys_or_named_lua_only() -> None:
    assert set(BOTH_SIDES) | set(LUA_ONLY) == provides(UNITS["keys"].source)
    assert not set(BOTH_SIDES) & set(LUA_ONLY)


async def _lua_names(queue: qa.Queue, calls: dict[str, tuple[str, ...]]) -> dict[str, str]:
    order = sorted(calls)
    args = ", ".join(
        "".join([f"{name}(ARGV[1]", *(f", '{arg}'" for arg in calls[name]), ")"]) for name in order
    )
    script = f"{UNITS['keys'].source}\nreturn {{{args}}}"
    names = await queue.client.eval(script, 0, queue._broker.keys.prefix)
    return {name: value.decode() for name, value in zip(order, names, strict=True)}


async def test_lua_key_functions_build_the_names_queue_keys_builds(queue: qa.Queue) -> None:
    keys = queue._broker.keys
    lua = await _lua_names(queue, {name: args for name, (args, _) in BOTH_SIDES.items()})
    for name, (_, suffix) in BOTH_SIDES.items():
        assert lua[name] == python_name(keys, name) == keys.prefix + suffix, name


async def test_lua_only_keys_stay_in_the_queues_slot(queue: qa.Queue) -> None:
    lua = await _lua_names(queue, LUA_ONLY)
    for name, value in lua.items():
        assert value.startswith(queue._broker.keys.prefix), name
    assert lua["idle_key"] != queue._broker.keys.idle  # the idle list comes in KEYS


# -- the loader -------------------------------------------------------------------------------


def _units(**needs: tuple[str, ...]) -> dict[str, LuaUnit]:
    return {name: LuaUnit(name, f"-- {name}", deps) for name, deps in needs.items()}


def test_needs_resolve_in_dependency_order_each_unit_once() -> None:
    units = _units(a=(), b=("a",), c=("a", "b"), d=("c", "a"))
    assert in_dependency_order("x.lua", ["d", "b"], units) == ["a", "b", "c", "d"]
    assert in_dependency_order("x.lua", [], units) == []


def test_a_cycle_of_needs_fails_loudly() -> None:
    units = _units(a=("c",), b=("a",), c=("b",))
    with pytest.raises(LuaDependencyError, match=r"cycle: a -> c -> b -> a"):
        in_dependency_order("x.lua", ["a"], units)
    with pytest.raises(LuaDependencyError, match=r"cycle: s -> s"):
        in_dependency_order("x.lua", ["s"], _units(s=("s",)))


def test_an_unknown_unit_fails_loudly_naming_who_needs_it() -> None:
    units = _units(a=("nope",))
    with pytest.raises(LuaDependencyError, match=r"a needs the unit 'nope'"):
        in_dependency_order("x.lua", ["a"], units)
    with pytest.raises(LuaDependencyError, match=r"x.lua needs the unit 'missing'"):
        in_dependency_order("x.lua", ["missing"], units)


def test_a_file_without_one_needs_line_fails_loudly() -> None:
    with pytest.raises(LuaDependencyError, match=r"exactly one '-- needs: unit, \.\.\.' line"):
        declared_needs("x.lua", "-- x.lua: no needs line\nreturn 1")
    with pytest.raises(LuaDependencyError, match="has 2"):
        declared_needs("x.lua", "-- needs: a\n-- needs: b\nreturn 1")
    assert declared_needs("x.lua", "-- x.lua: a script\n-- needs:\nreturn 1") == ()
    assert declared_needs("x.lua", "-- needs: keys, packed\nreturn 1") == ("keys", "packed")


def test_a_script_holds_the_units_it_needs_and_theirs_in_order() -> None:
    lease = SCRIPTS["lease"]
    assert lease.units == tuple(in_dependency_order("lease.lua", lease.needs, UNITS))
    assert set(lease.needs) <= set(lease.units)
    assert lease.source == "\n".join([*(UNITS[u].source for u in lease.units), lease.body])
    assert SCRIPTS["checkin"].units == ("clock", "format")
    assert isinstance(LuaScript.load("pause"), LuaScript)


def test_the_library_holds_every_unit_once_before_the_functions() -> None:
    source = LIBRARY.source
    for unit in UNITS.values():
        assert source.count(unit.source) == 1, unit.name
    places = [source.index(UNITS[unit].source) for unit in LIBRARY.units]
    assert places == sorted(places)
    for unit in LIBRARY.units:
        for need in UNITS[unit].needs:
            assert LIBRARY.units.index(need) < LIBRARY.units.index(unit), (unit, need)
    assert source.index(UNITS[LIBRARY.units[-1]].source) < source.index("redis.register_function")
    assert FunctionLibrary.build(SCRIPTS) == LIBRARY  # the same source, the same name


def test_the_library_name_changes_with_any_unit() -> None:
    changed = dict(UNITS, keys=LuaUnit("keys", UNITS["keys"].source + "\n", ()))
    assert FunctionLibrary.build(SCRIPTS, changed).name != LIBRARY.name


async def test_every_script_runs_by_evalsha_with_the_units_it_needs(
    queue: qa.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers without functions run each script's own source: a helper it fails to need
    would be a nil global there, though the library (which has them all) runs fine."""
    scripts = queue._broker.scripts
    scripts.functions = False
    sent = _record(queue, monkeypatch)
    for method in _wrapper_methods():
        await getattr(scripts, method)(*_sample_args(method))
    assert {call.script for call in sent} == set(SCRIPTS)
    shas = [script.sha for script in SCRIPTS.values()]
    assert await queue.client.script_exists(*shas) == [True] * len(shas)
