"""The wire formats are named once on each side: includes/wire.lua and broker/wire.py agree.

Python's places count from 0 (IntEnum members, tuple indexes), Lua's from 1.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

import queue_async as qa
from queue_async.broker import wire
from queue_async.broker.scripts import UNITS

pytestmark = pytest.mark.anyio

WIRE = UNITS["wire"].source

EXPECTED: dict[str, Any] = {
    "OPT": {member.name.lower(): member.value + 1 for member in wire.Opt},
    "OPTIONAL": [member.name.lower() for member in wire.OPTIONAL],
    "LEASED": {member.name.lower(): member.value + 1 for member in wire.Leased},
    "LEASED_FIELDS": wire.LEASED_FIELDS,
    "ENQUEUED": {name: place + 1 for place, name in enumerate(wire.ENQUEUE_FIELDS)},
    "ENQUEUED_FIELDS": len(wire.ENQUEUE_FIELDS),
    "COMPLETED": {name: place + 1 for place, name in enumerate(wire.COMPLETION_FIELDS)},
    "COMPLETED_FIELDS": len(wire.COMPLETION_FIELDS),
    "ENDED": {name: place + 1 for place, name in enumerate(wire.ENDED_FIELDS)},
    "ENDED_FIELDS": len(wire.ENDED_FIELDS),
    "CARRIED_RESULT_MAX": wire.CARRIED_RESULT_MAX,
    "FAIL_DEAD": wire.FAIL_DEAD,
    "FAIL_ABORTED": wire.FAIL_ABORTED,
}


def _lua_value(text: str) -> Any:
    """A Lua literal of the kinds wire.lua uses: an integer, a table of name = integer, or
    a list of quoted names."""
    text = text.strip()
    if not text.startswith("{"):
        return int(text)
    inner = text[1:-1]
    pairs = re.findall(r"(\w+)\s*=\s*(-?\d+)", inner)
    if pairs:
        return {name: int(value) for name, value in pairs}
    return re.findall(r"'([^']*)'", inner)


def parse_wire(source: str) -> dict[str, Any]:
    """Every top-level ``local NAME[, NAME] = value[, value]`` of the wire unit."""
    found: dict[str, Any] = {}
    code = "\n".join(line for line in source.splitlines() if not line.startswith("--"))
    for names, values in re.findall(r"^local ([\w, ]+?)\s*=\s*(\{.*?\}|[^\n]+)", code, re.M | re.S):
        items = [values] if values.startswith("{") else values.split(",")
        for name, value in zip(names.split(","), items, strict=True):
            found[name.strip()] = _lua_value(value)
    return found


def test_the_wire_unit_names_exactly_what_wire_py_names() -> None:
    assert parse_wire(WIRE) == EXPECTED


def test_the_places_of_each_format_count_from_one_without_gaps() -> None:
    lua = parse_wire(WIRE)
    for table, size in [("LEASED", "LEASED_FIELDS"), ("ENQUEUED", "ENQUEUED_FIELDS")]:
        assert sorted(lua[table].values()) == list(range(1, lua[size] + 1)), table
    assert sorted(lua["COMPLETED"].values()) == list(range(1, lua["COMPLETED_FIELDS"] + 1))
    assert sorted(lua["OPT"].values()) == list(range(1, len(lua["OPT"]) + 1))
    assert set(lua["OPTIONAL"]) <= set(lua["OPT"])


async def test_the_server_reads_the_wire_unit_as_wire_py_names_it(queue: qa.Queue) -> None:
    fields = ", ".join(f"{name} = {name}" for name in EXPECTED)
    script = f"{WIRE}\nreturn cjson.encode({{{fields}}})"
    assert json.loads(await queue.client.eval(script, 0)) == EXPECTED
