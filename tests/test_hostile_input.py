"""Hostile input on every backend: each case round-trips exactly or is refused, nothing written.

``CASES`` is the catalogue; ``docs/reliability.md`` shows it as a table, and
:func:`test_the_documented_table_is_the_catalogue` keeps the two the same, while
:func:`test_hostile_input` checks each case's outcome on each backend.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import Field, create_model
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, SessionMeta

from .dbstate import all_value_rows, session_ids
from .models import AllTypes, ChatMeta

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
ROUND_TRIPS = "round-trips"
BACKEND_COLUMNS = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MariaDB"}


def keyed(alias: str) -> Callable[[], type[SessionMeta]]:
    """Declares, when called, a model whose one field is stored under ``alias``."""

    def declare() -> type[SessionMeta]:
        model: type[SessionMeta] = create_model(
            "Keyed", __base__=SessionMeta, value=(str | None, Field(default=None, alias=alias))
        )
        return model

    return declare


def aliased(
    serialization_alias: str | None = None, validation_alias: str | None = None
) -> Callable[[], type[SessionMeta]]:
    """Declares, when called, a model whose one field has a serialization or validation alias."""

    def declare() -> type[SessionMeta]:
        info = Field(
            default=None, serialization_alias=serialization_alias, validation_alias=validation_alias
        )
        model: type[SessionMeta] = create_model(
            "Aliased", __base__=SessionMeta, value=(str | None, info)
        )
        return model

    return declare


def all_types() -> type[SessionMeta]:
    return AllTypes


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@dataclass(frozen=True)
class Case:
    """One hostile input: what is written, and the outcome expected on every backend."""

    id: str
    shown: str
    values: dict[str, Any]
    expected: str = ROUND_TRIPS
    # Called inside the attempt: declaring the model may itself be what refuses the case.
    model: Callable[[], type[SessionMeta]] = all_types
    session_id: str = "s"
    # Outcome on a backend where it differs from ``expected``.
    per_backend: dict[str, str] = field(default_factory=dict)

    def outcome(self, backend: str) -> str:
        return self.per_backend.get(backend, self.expected)


def refused(error: str) -> str:
    return f"refused: {error}"


_LONG_KEY = "k" * 255
CASES = [
    # Keys come from the model's field names and aliases, so they are checked at bind time.
    Case("key-empty", 'alias ""', {"": "v"}, refused("ModelDefinitionError"), keyed("")),
    Case("key-255", "alias of 255 ASCII characters", {_LONG_KEY: "v"}, model=keyed(_LONG_KEY)),
    Case(
        "key-255-emoji",
        "alias of 255 emoji (1,020 bytes)",
        {"🙂" * 255: "v"},
        model=keyed("🙂" * 255),
    ),
    Case(
        "key-256",
        "alias of 256 characters",
        {"k" * 256: "v"},
        refused("ModelDefinitionError"),
        keyed("k" * 256),
    ),
    Case(
        "key-non-ascii",
        'alias "clé-ключ-键-🙂"',
        {"clé-ключ-键-🙂": "v"},
        model=keyed("clé-ключ-键-🙂"),
    ),
    Case(
        "key-sql",
        "alias `'; DROP TABLE agent_sessions; --`",
        {"'; DROP TABLE agent_sessions; --": "v"},
        model=keyed("'; DROP TABLE agent_sessions; --"),
    ),
    Case("key-quotes", "alias ``\"`\\'%s?``", {"\"`\\'%s?": "v"}, model=keyed("\"`\\'%s?")),
    Case(
        "key-nul",
        'alias "a\\x00b"',
        {"a\x00b": "v"},
        refused("ModelDefinitionError"),
        keyed("a\x00b"),
    ),
    Case(
        "key-surrogate",
        'alias "a\\ud800" (Pydantic refuses to build the model)',
        {"a\ud800": "v"},
        refused("SchemaError"),
        keyed("a\ud800"),
    ),
    Case(
        "key-trailing-space",
        'alias "title " (MariaDB would compare it equal to "title")',
        {"title ": "v"},
        refused("ModelDefinitionError"),
        keyed("title "),
    ),
    Case(
        "key-serialization-alias",
        'serialization_alias "out" unlike the key "value"',
        {"value": "v"},
        refused("ModelDefinitionError"),
        aliased(serialization_alias="out"),
    ),
    Case(
        "key-validation-alias",
        'validation_alias "in" unlike the key "value"',
        {"value": "v"},
        refused("ModelDefinitionError"),
        aliased(validation_alias="in"),
    ),
    # Session ids.
    Case(
        "sid-empty", 'session id ""', {"text": "v"}, refused("InvalidSessionIdError"), session_id=""
    ),
    Case("sid-255", "session id of 255 characters", {"text": "v"}, session_id="s" * 255),
    Case("sid-255-emoji", "session id of 255 emoji", {"text": "v"}, session_id="🙂" * 255),
    Case(
        "sid-256",
        "session id of 256 characters",
        {"text": "v"},
        refused("InvalidSessionIdError"),
        session_id="s" * 256,
    ),
    Case(
        "sid-10000",
        "session id of 10,000 characters",
        {"text": "v"},
        refused("InvalidSessionIdError"),
        session_id="s" * 10_000,
    ),
    Case(
        "sid-nul",
        'session id "a\\x00b"',
        {"text": "v"},
        refused("InvalidSessionIdError"),
        session_id="a\x00b",
    ),
    Case(
        "sid-non-ascii", 'session id "séance-会话-🙂"', {"text": "v"}, session_id="séance-会话-🙂"
    ),
    Case(
        "sid-surrogate",
        'session id "a\\udc80"',
        {"text": "v"},
        refused("InvalidSessionIdError"),
        session_id="a\udc80",
    ),
    Case(
        "sid-sql",
        "session id `'; DROP TABLE agent_sessions; --`",
        {"text": "v"},
        session_id="'; DROP TABLE agent_sessions; --",
    ),
    Case(
        "sid-trailing-space",
        'session id "abc " (MariaDB would compare it equal to "abc")',
        {"text": "v"},
        refused("InvalidSessionIdError"),
        session_id="abc ",
    ),
    # Values.
    Case("value-nul", 'str "a\\x00b"', {"text": "a\x00b"}),
    Case("value-nul-in-any", 'dict[str, Any] {"k\\x00": "v\\x00"}', {"extra": {"k\x00": "v\x00"}}),
    Case("value-surrogate", 'str "a\\ud800b"', {"text": "a\ud800b"}, refused("ValidationError")),
    Case(
        "value-surrogate-in-key",
        'dict[str, Any] {"\\udfff": 1}',
        {"extra": {"\udfff": 1}},
        refused("ValidationError"),
    ),
    Case("value-1mb", "str of 1,000,000 characters", {"text": "é" * 1_000_000}),
    Case("value-1mb-in-list", "list[str] with a 1 MB item", {"words": ["x" * 1_000_000, "y"]}),
    Case("value-nested-200", "dict nested 200 deep", {"extra": nested(200)}),
    Case(
        "value-nested-201",
        "dict nested 201 deep (JSON parser's limit once wrapped for reading)",
        {"extra": nested(201)},
        refused("ValidationError"),
    ),
    Case(
        "value-nested-1000",
        "dict nested 1,000 deep",
        {"extra": nested(1000)},
        refused("ValidationError"),
    ),
    Case("value-nan", "float NaN", {"number": math.nan}, refused("ValidationError")),
    Case("value-inf", "float +inf", {"number": math.inf}, refused("ValidationError")),
    Case("value-minus-inf", "float -inf", {"number": -math.inf}, refused("ValidationError")),
    Case(
        "value-decimal-nan",
        'Decimal("NaN")',
        {"amount": Decimal("NaN")},
        refused("ValidationError"),
    ),
    Case(
        "value-nan-in-any",
        'dict[str, Any] {"x": NaN}',
        {"extra": {"x": math.nan}},
        refused("ValidationError"),
    ),
    Case("value-int-2-64", "int 2**64", {"integer": 2**64}),
    Case("value-int-2-200", "int -(2**200)", {"integer": -(2**200)}),
    Case("value-int-in-any", 'dict[str, Any] {"n": 2**100}', {"extra": {"n": 2**100}}),
    Case(
        "value-int-5000-digits",
        "int of 5,000 digits",
        {"integer": 10**4999},
        refused("ValidationError"),
    ),
    Case(
        "value-naive-datetime",
        "naive datetime",
        {"moment": dt.datetime(2024, 2, 29, 23, 59, 59, 999999)},
    ),
    Case(
        "value-aware-datetime",
        "aware datetime, UTC-03:30",
        {
            "moment": dt.datetime(
                2024, 1, 1, 0, 0, tzinfo=dt.timezone(-dt.timedelta(hours=3, minutes=30))
            )
        },
    ),
    Case(
        "value-zoneinfo-datetime",
        "aware datetime in Europe/Paris (read back as the fixed offset +01:00)",
        {"moment": dt.datetime(2024, 1, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))},
    ),
    Case(
        "value-datetime-year-1",
        "0001-01-01T00:00+05:00 (its UTC instant is before year 1)",
        {"moment": dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))},
    ),
    Case(
        "value-datetime-year-9999",
        "9999-12-31T23:59-05:00 (its UTC instant is after year 9999)",
        {"moment": dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5)))},
    ),
    Case("value-bytes", 'bytes b"\\x00\\xff"', {"blob": b"\x00\xff\x00"}),
    Case(
        "value-bytes-in-any",
        'dict[str, Any] {"b": b"\\xff"}',
        {"extra": {"b": b"\xff"}},
        refused("ValidationError"),
    ),
]


def _assert_same(read: Any, written: Any, where: str) -> None:
    assert read == written, where
    if isinstance(written, dt.datetime):
        assert read.utcoffset() == written.utcoffset(), where
        assert (read.tzinfo is None) == (written.tzinfo is None), where


async def _attempt(case: Case, engine: AsyncEngine) -> str:
    """Write the case, read it back and compare; the outcome as the table states it."""
    try:
        store = MetadataStore(case.model(), engine)
        meta = store.bind(case.session_id)
        await meta.set_metadata(case.values)
    except Exception as exc:
        # Refused: the database must hold nothing at all.
        assert await all_value_rows(engine) == 0
        assert await session_ids(engine) == []
        return refused(type(exc).__name__)
    read = await meta.get_metadata()
    for key, written in case.values.items():
        name = store.spec.field(key).name
        _assert_same(getattr(read, name), written, key)
        narrow = await meta.get_metadata([key])
        _assert_same(getattr(narrow, name), written, key)
        assert narrow.model_fields_set == {name}
        assert await store.find_sessions_by_metadata(key, written) == [case.session_id]
    assert await session_ids(engine) == [case.session_id]
    return ROUND_TRIPS


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_hostile_input(case: Case, backend: str, engine: AsyncEngine) -> None:
    # The tables exist whatever the case does, so "nothing written" can be checked.
    await MetadataStore(ChatMeta, engine).create_tables()
    assert await _attempt(case, engine) == case.outcome(backend)


def _documented_rows() -> dict[str, dict[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    header = "| Case | Input | SQLite | PostgreSQL | MariaDB |"
    assert header in text, f"{DOC} lacks the table header {header!r}"
    rows: dict[str, dict[str, str]] = {}
    for line in text[text.index(header) :].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        case_id = re.fullmatch(r"`([^`]+)`", cells[0])
        assert case_id, line
        rows[case_id.group(1)] = dict(zip(BACKEND_COLUMNS.values(), cells[-3:], strict=True))
    return rows


def cell(outcome: str) -> str:
    """An outcome as the documented table writes it."""
    if outcome == ROUND_TRIPS:
        return outcome
    return f"refused: `{outcome.removeprefix('refused: ')}`"


def test_the_documented_table_is_the_catalogue() -> None:
    documented = _documented_rows()
    assert list(documented) == [case.id for case in CASES]
    for case in CASES:
        expected = {
            column: cell(case.outcome(backend)) for backend, column in BACKEND_COLUMNS.items()
        }
        assert documented[case.id] == expected, case.id


def documented_table() -> str:
    """The table for docs/reliability.md, generated from the catalogue."""
    lines = [
        "| Case | Input | SQLite | PostgreSQL | MariaDB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in CASES:
        shown = case.shown.replace("|", "\\|")
        outcomes = " | ".join(cell(case.outcome(backend)) for backend in BACKEND_COLUMNS)
        lines.append(f"| `{case.id}` | {shown} | {outcomes} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(documented_table())
