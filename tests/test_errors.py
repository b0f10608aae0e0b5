"""Every error of the public API: a ``SessionMetaError`` naming what was wrong and where.

Bad arguments raise ``InvalidArgumentError`` (also a ``ValueError`` and a ``TypeError``),
filter problems ``FilterError``, bad cursors ``InvalidCursorError``; each message names the
offending argument or value, and the session when there is one. Invalid values stay
``pydantic.ValidationError`` (tested elsewhere). An exception that is neither a driver's
nor sessionmeta's, such as a ``KeyError`` raised by a validator of the application's
model, reaches the caller unchanged. Filters have limits (32 levels of nesting, 256
conditions), checked before any I/O. The command line reports each of these as one line
on stderr and exit code 2.

Argument checks run on a store whose database is never opened: each case also checks
that nothing was touched. Cases that need stored data run on every backend.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import operator
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
from pydantic import field_validator
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta import (
    Condition,
    Filter,
    FilterError,
    InvalidCursorError,
    MetadataStore,
    SessionMetaError,
    all_of,
    any_of,
    check_store,
    field,
)
from sessionmeta.errors import InvalidArgumentError

from .models import ChatMeta
from .test_cli import ROOT, Result, assert_refused, cli_env, entry_point

Store = MetadataStore[ChatMeta]
# A message must contain every fragment: a string as it is, a pattern where it matches.
Fragment = str | re.Pattern[str]

MAX_DEPTH = 32
MAX_CONDITIONS = 256
MAX_LIMIT = 10_000


def value(shown: object) -> re.Pattern[str]:
    """The repr of ``shown`` as a whole word: ``0`` is not found in ``10000``."""
    return re.compile(r"(?<![\w.])" + re.escape(repr(shown)) + r"(?!\w|\.\d)")


def number(text: str) -> re.Pattern[str]:
    """A number as a whole word, with or without thousands separators."""
    return re.compile(r"(?<![\w.])" + text.replace(",", ",?") + r"(?!\w|\.\d)")


def check_message(error: BaseException, fragments: tuple[Fragment, ...]) -> None:
    message = str(error)
    for fragment in fragments:
        if isinstance(fragment, str):
            assert fragment in message, f"{fragment!r} not in {message!r}"
        else:
            assert fragment.search(message), f"{fragment.pattern!r} not in {message!r}"


async def outcome(call: Callable[[], object]) -> None:
    """Run ``call``, awaiting what it returns when that is awaitable."""
    result = call()
    if inspect.isawaitable(result):
        await result


def nested(depth: int, group: Callable[..., Filter]) -> Filter:
    filter_: Filter = field("priority") > 1
    for _ in range(depth):
        filter_ = group(filter_)
    return filter_


def alternating(depth: int) -> Filter:
    filter_: Filter = field("priority") > 1
    for level in range(depth):
        filter_ = any_of(filter_, field("title") == f"t{level}") if level % 2 else all_of(filter_)
    return filter_


def forge(cursor: str, *, sort_value: Any = None, session_id: Any = None) -> str:
    """``cursor`` (a real ``next_cursor``) with its sort value or session id replaced.

    A cursor is the URL-safe base64 of a JSON array holding a ``[tag, sort value]``
    pair and the session id; the sort value is re-tagged ``"s"`` (plain), so that the
    forged value is not caught by a datetime parse.
    """
    text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    parts = json.loads(text)
    assert isinstance(parts, list) and len(parts) == 3, f"unexpected cursor layout: {text}"
    made_for, tagged, last_id = parts
    assert isinstance(tagged, list) and len(tagged) == 2, f"unexpected cursor layout: {text}"
    if sort_value is not None:
        tagged = ["s", sort_value]
    if session_id is not None:
        last_id = session_id
    forged = json.dumps([made_for, tagged, last_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(forged.encode("utf-8")).decode("ascii").rstrip("=")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


# ---- a store whose database is never opened ---------------------------------------------


@dataclass
class Offline:
    """A store on an SQLite file that must never exist, and its pool's checkouts."""

    store: Store
    path: Path
    checkouts: list[object]

    def assert_untouched(self) -> None:
        assert self.checkouts == [], "a connection was checked out: the check came after I/O"
        assert not self.path.exists(), "the database was opened: the check came after I/O"


@pytest.fixture
async def offline(tmp_path: Path) -> AsyncIterator[Offline]:
    path = tmp_path / "never-opened.sqlite3"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    checkouts: list[object] = []
    event.listen(engine.sync_engine, "checkout", lambda *args: checkouts.append(args))
    try:
        yield Offline(MetadataStore(ChatMeta, engine, create_tables=True), path, checkouts)
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Bad:
    """A call with a bad input, the error it must raise and what its message must name."""

    call: Callable[[Store], object]
    error: type[Exception]
    names: tuple[Fragment, ...]


def bad(error: type[Exception], call: Callable[[Store], object], *names: Fragment, id: str) -> Any:
    return pytest.param(Bad(call, error, names), id=id)


# Every method that takes a limit, on the store, a bound session and a scoped view.
LIMITED: dict[str, Callable[[Store, Any], object]] = {
    "store.find_sessions": lambda s, n: s.find_sessions(limit=n),
    "store.list_sessions": lambda s, n: s.list_sessions(limit=n),
    "store.find_sessions_by_metadata": lambda s, n: s.find_sessions_by_metadata(
        "owner_id", "u1", limit=n
    ),
    "bound.find_sessions_by_metadata": lambda s, n: s.bind("s1").find_sessions_by_metadata(
        "owner_id", "u1", limit=n
    ),
    "scoped.find_sessions": lambda s, n: s.scoped(owner_id="u1").find_sessions(limit=n),
    "scoped.list_sessions": lambda s, n: s.scoped(owner_id="u1").list_sessions(limit=n),
    "scoped.find_sessions_by_metadata": lambda s, n: s.scoped(
        owner_id="u1"
    ).find_sessions_by_metadata("owner_id", "u1", limit=n),
    "scoped_bound.find_sessions_by_metadata": lambda s, n: (
        s.scoped(owner_id="u1").bind("s1").find_sessions_by_metadata("owner_id", "u1", limit=n)
    ),
}
BAD_LIMITS: list[Any] = [0, -1, True, 1.5, "10", 100_000]
BAD_SIZES: list[Any] = [0, -1, True, 1.5, "10"]
BYTES: Any = b"v"


def _limit_case(name: str, method: Callable[[Store, Any], object], limit: Any) -> Any:
    names: tuple[Fragment, ...] = ("limit", value(limit))
    if limit == 100_000:
        names += (number("10,000"),)  # the maximum, so the caller knows what would do
    return bad(
        InvalidArgumentError,
        lambda store: method(store, limit),
        *names,
        id=f"{name}(limit={limit!r})",
    )


def checking(**options: Any) -> Callable[[Store], object]:
    return lambda store: check_store(store, **options)


LIMIT_CASES = [
    _limit_case(name, method, limit) for name, method in LIMITED.items() for limit in BAD_LIMITS
]

ARGUMENT_CASES = [
    # Options of the store.
    bad(
        InvalidArgumentError,
        lambda s: MetadataStore(ChatMeta, s.engine, on_invalid="ignore"),  # type: ignore[arg-type]
        "on_invalid",
        value("ignore"),
        id="MetadataStore(on_invalid='ignore')",
    ),
    bad(
        InvalidArgumentError,
        lambda s: MetadataStore(ChatMeta, s.engine, on_invalid=None),  # type: ignore[arg-type]
        "on_invalid",
        value(None),
        id="MetadataStore(on_invalid=None)",
    ),
    bad(
        InvalidArgumentError,
        lambda s: MetadataStore(ChatMeta, s.engine, connect_timeout="5"),  # type: ignore[arg-type]
        "connect_timeout",
        value("5"),
        id="MetadataStore(connect_timeout='5')",
    ),
    bad(
        InvalidArgumentError,
        lambda s: MetadataStore(ChatMeta, s.engine, connect_timeout=True),
        "connect_timeout",
        value(True),
        id="MetadataStore(connect_timeout=True)",
    ),
    bad(
        InvalidArgumentError,
        lambda s: MetadataStore(ChatMeta, s.engine, connect_timeout=[30]),  # type: ignore[arg-type]
        "connect_timeout",
        value([30]),
        id="MetadataStore(connect_timeout=[30])",
    ),
    bad(
        InvalidArgumentError,
        lambda s: MetadataStore.from_url(
            ChatMeta,
            s.engine.url.render_as_string(hide_password=False),
            connect_timeout="5",  # type: ignore[arg-type]
        ),
        "connect_timeout",
        value("5"),
        id="MetadataStore.from_url(connect_timeout='5')",
    ),
    # check_store's batch size and examples.
    *(
        bad(
            InvalidArgumentError,
            checking(batch_size=size),
            "batch_size",
            value(size),
            id=f"check_store(batch_size={size!r})",
        )
        for size in BAD_SIZES
    ),
    bad(
        InvalidArgumentError,
        checking(max_examples=-1),
        "max_examples",
        value(-1),
        id="check_store(max_examples=-1)",
    ),
    # Session ids.
    bad(
        InvalidArgumentError,
        lambda s: s.get_many("a-string"),
        value("a-string"),
        id="store.get_many('a-string')",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.scoped(owner_id="u1").get_many("a-string"),
        value("a-string"),
        id="scoped.get_many('a-string')",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.get_many([42]),  # type: ignore[list-item]
        value(42),
        id="store.get_many([42])",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.get_many(42),  # type: ignore[arg-type]
        value(42),
        id="store.get_many(42)",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.bind(42),  # type: ignore[arg-type]
        value(42),
        id="store.bind(42)",
    ),
    # Order.
    bad(
        InvalidArgumentError,
        lambda s: s.find_sessions(order_by=42),  # type: ignore[arg-type]
        "order_by",
        value(42),
        id="find_sessions(order_by=42)",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.list_sessions(order_by=["priority"]),  # type: ignore[arg-type]
        "order_by",
        value(["priority"]),
        id="list_sessions(order_by=['priority'])",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.scoped(owner_id="u1").find_sessions(order_by=None),  # type: ignore[arg-type]
        "order_by",
        value(None),
        id="scoped.find_sessions(order_by=None)",
    ),
    # Filters of the wrong type.
    bad(
        InvalidArgumentError,
        lambda s: s.find_sessions(42),  # type: ignore[arg-type]
        value(42),
        id="find_sessions(42)",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.count_sessions("owner_id=u1"),  # type: ignore[arg-type]
        value("owner_id=u1"),
        id="count_sessions('owner_id=u1')",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.list_sessions([field("priority") > 1, 42]),  # type: ignore[list-item]
        value(42),
        id="list_sessions([condition, 42])",
    ),
    bad(
        InvalidArgumentError,
        lambda s: any_of(field("priority") > 1, 42),  # type: ignore[arg-type]
        value(42),
        id="any_of(condition, 42)",
    ),
    # Conditions that do not fit: FilterError, naming the key and what was wrong.
    bad(
        FilterError,
        lambda s: s.find_sessions(Condition("title", "like", "x")),  # type: ignore[arg-type]
        value("title"),
        value("like"),
        id="unknown operator 'like'",
    ),
    bad(
        FilterError,
        lambda s: s.count_sessions(Condition("title", None)),  # type: ignore[arg-type]
        value("title"),
        value(None),
        id="operator None",
    ),
    bad(
        FilterError,
        lambda s: s.find_sessions(field("tags") > 1),
        value("tags"),
        id="range on a list field",
    ),
    bad(
        FilterError,
        lambda s: s.find_sessions(field("title").contains("x")),
        value("title"),
        id="contains on a string field",
    ),
    bad(
        FilterError,
        lambda s: s.find_sessions(Condition("priority", "in", 5)),
        value("priority"),
        value(5),
        id="'in' without a list",
    ),
    bad(
        FilterError,
        lambda s: s.find_sessions(order_by=field("tags").desc()),
        value("tags"),
        id="order by a list field",
    ),
    # Cursors that no query made.
    bad(
        InvalidCursorError,
        lambda s: s.find_sessions(cursor="!!!not base64!!!"),
        "!!!not base64!!!",
        id="cursor not base64",
    ),
    bad(
        InvalidCursorError,
        lambda s: s.list_sessions(cursor=b64(bytes(range(200, 236)))),
        b64(bytes(range(200, 236)))[:40],
        id="cursor of random base64",
    ),
    bad(
        InvalidCursorError,
        lambda s: s.find_sessions(cursor=b64(b'{"after": "s1"}')),
        b64(b'{"after": "s1"}'),
        id="cursor of base64 JSON of another shape",
    ),
    bad(
        InvalidCursorError,
        lambda s: s.scoped(owner_id="u1").find_sessions(cursor=42),  # type: ignore[arg-type]
        "cursor",
        value(42),
        id="cursor=42",
    ),
    # Filter limits: refused before any I/O, naming the limit.
    bad(
        FilterError,
        lambda s: s.find_sessions(nested(3_000, any_of)),
        number(str(MAX_DEPTH)),
        id="any_of nested 3,000 deep",
    ),
    bad(
        FilterError,
        lambda s: s.count_sessions(nested(3_000, all_of)),
        number(str(MAX_DEPTH)),
        id="all_of nested 3,000 deep",
    ),
    bad(
        FilterError,
        lambda s: s.list_sessions(alternating(40)),
        number(str(MAX_DEPTH)),
        id="all_of/any_of alternating 40 deep",
    ),
    bad(
        FilterError,
        lambda s: s.find_sessions(*(field("priority") > n for n in range(1_500))),
        number(str(MAX_CONDITIONS)),
        id="1,500 ANDed conditions",
    ),
    bad(
        FilterError,
        lambda s: s.find_sessions(any_of(*(field("priority") == n for n in range(600)))),
        number(str(MAX_CONDITIONS)),
        id="600 ORed conditions",
    ),
    # Writes.
    bad(
        InvalidArgumentError,
        lambda s: s.bind("s1").set_metadata({"title": "x"}, expected_version=42),  # type: ignore[arg-type]
        "expected_version",
        value("s1"),
        value(42),
        id="set_metadata(expected_version=42)",
    ),
    bad(
        InvalidArgumentError,
        lambda s: (
            s.scoped(owner_id="u1").bind("s1").set_metadata({"title": "x"}, expected_version=BYTES)
        ),
        "expected_version",
        value("s1"),
        value(b"v"),
        id="scoped set_metadata(expected_version=b'v')",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.bind("s1").add_to("title", "x"),
        value("s1"),
        value("title"),
        id="add_to on a str field",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.bind("s1").remove_from("priority", 1),
        value("s1"),
        value("priority"),
        id="remove_from on an int field",
    ),
    bad(
        InvalidArgumentError,
        lambda s: s.scoped(owner_id="u1").bind("s1").add_to("title", "x"),
        value("s1"),
        value("title"),
        id="scoped add_to on a str field",
    ),
    # A scope with nothing in it.
    bad(InvalidArgumentError, lambda s: s.scoped(), "scoped", id="scoped()"),
    bad(InvalidArgumentError, lambda s: s.scoped({}), "scoped", id="scoped({})"),
]


@pytest.mark.parametrize("case", LIMIT_CASES + ARGUMENT_CASES)
async def test_bad_input_is_refused_before_any_io(offline: Offline, case: Bad) -> None:
    with pytest.raises(case.error) as caught:
        await outcome(lambda: case.call(offline.store))
    assert isinstance(caught.value, SessionMetaError)
    check_message(caught.value, case.names)
    offline.assert_untouched()


def test_invalid_argument_error_is_a_value_and_a_type_error() -> None:
    # Callers that caught the ValueError or TypeError raised before still catch it.
    assert issubclass(InvalidArgumentError, SessionMetaError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(InvalidArgumentError, TypeError)


# ---- on every backend ------------------------------------------------------------------


def checkouts(engine: AsyncEngine) -> list[object]:
    """The connections checked out of ``engine``'s pool from now on."""
    seen: list[object] = []
    event.listen(engine.sync_engine, "checkout", lambda *args: seen.append(args))
    return seen


# Before the limits, some of these queries run for many minutes (PostgreSQL plans 1,500
# conditions for longer than anyone waits): give up on them after this long.
QUERY_SECONDS = 20


async def within(seconds: float, query: Awaitable[object]) -> None:
    try:
        await asyncio.wait_for(query, seconds)
    except asyncio.TimeoutError:
        pytest.fail(f"the database ran the query for {seconds} s instead of a refusal")


LIMIT_QUERIES: dict[str, Callable[[Store], Awaitable[object]]] = {
    "1,500 ANDs": lambda s: s.find_sessions(*(field("priority") > n for n in range(1_500))),
    "600 ORs": lambda s: s.list_sessions(any_of(*(field("priority") == n for n in range(600)))),
    "300 in nested groups": lambda s: s.count_sessions(
        all_of(
            any_of(*(field("priority") == n for n in range(150))),
            any_of(*(field("title") == f"t{n}" for n in range(150))),
        )
    ),
    "300 mapping equalities and scope": lambda s: s.scoped(owner_id="u1").find_sessions(
        *({"priority": n} for n in range(300))
    ),
    "any_of nested 3,000 deep": lambda s: s.find_sessions(nested(3_000, any_of)),
}


@pytest.mark.parametrize("query", LIMIT_QUERIES.values(), ids=LIMIT_QUERIES.keys())
async def test_filter_limits_are_checked_before_the_database_sees_the_query(
    store: Store, engine: AsyncEngine, query: Callable[[Store], Awaitable[object]]
) -> None:
    await store.bind("s1").set_metadata({"owner_id": "u1", "priority": 3, "title": "t1"})
    seen = checkouts(engine)
    with pytest.raises(FilterError) as caught:
        await within(QUERY_SECONDS, query(store))
    assert re.search(rf"\b({MAX_DEPTH}|{MAX_CONDITIONS})\b", str(caught.value)), caught.value
    assert seen == []


async def test_ordinary_chains_of_operators_stay_within_the_limits(store: Store) -> None:
    # `a | b | c` nests a group per operator; 40 conditions chained are still a plain
    # query, and a 32-level limit must not refuse them.
    for index in range(40):
        await store.bind(f"s{index:02}").set_metadata({"priority": index, "title": "t"})
    ors = reduce(operator.or_, [field("priority") == n for n in range(40)])
    ands = reduce(operator.and_, [field("priority") >= 0 for _ in range(40)])
    assert len(await store.find_sessions(ors)) == 40
    assert await store.count_sessions(ands) == 40
    assert len(await store.find_sessions(nested(16, any_of))) == 38


async def real_cursor(store: Store, order_by: str) -> str:
    for session_id, priority in [("a", 1), ("b", 2), ("c", 3)]:
        await store.bind(session_id).set_metadata({"owner_id": "u1", "priority": priority})
    page = await store.find_sessions(order_by=order_by, limit=1)
    assert page.next_cursor is not None
    return page.next_cursor


FORGERIES: list[Any] = [
    pytest.param(order_by, {"sort_value": forged}, id=f"{order_by} sort value {forged!r}")
    for order_by in ["priority", "-created_at"]
    for forged in [[1, 2], {"a": 1}, 5]
] + [
    pytest.param("priority", {"session_id": "s\x00"}, id="priority, session id with NUL"),
    pytest.param("session_id", {"session_id": "x\x00"}, id="session_id, session id with NUL"),
]


@pytest.mark.parametrize(("order_by", "change"), FORGERIES)
async def test_a_forged_cursor_is_refused(
    store: Store, order_by: str, change: dict[str, Any]
) -> None:
    forged = forge(await real_cursor(store, order_by), **change)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.find_sessions(order_by=order_by, cursor=forged),
        lambda: store.list_sessions(order_by=order_by, cursor=forged),
        lambda: store.scoped(owner_id="u1").find_sessions(order_by=order_by, cursor=forged),
    ]
    for call in calls:
        with pytest.raises(InvalidCursorError) as caught:
            await call()
        check_message(caught.value, ("cursor", forged[:40]))
    # The store is still usable: nothing was left half done.
    assert await store.count_sessions() == 3


async def test_a_cursor_of_another_order_is_refused(store: Store) -> None:
    cursor = await real_cursor(store, "priority")
    with pytest.raises(InvalidCursorError) as caught:
        await store.find_sessions(order_by="-priority", cursor=cursor)
    check_message(caught.value, (cursor[:40],))


# ---- exceptions of the application's own code -------------------------------------------


class AppError(Exception):
    """Raised by the application's validator: none of sessionmeta's business."""


class Guarded(ChatMeta):
    """ChatMeta with a validator that raises a non-validation error on a marker tag."""

    @field_validator("tags")
    @classmethod
    def _tripwire(cls, tags: list[str] | None) -> list[str] | None:
        if tags and "trip-key" in tags:
            raise KeyError("trip-key")
        if tags and "trip-app" in tags:
            raise AppError("trip-app")
        return tags


async def _conditional_write(store: MetadataStore[Guarded], marker: str) -> None:
    read = await store.bind("s2").get_metadata_versioned()
    await store.bind("s2").set_metadata({"tags": [marker]}, expected_version=read.version)


# Each reaches the validator with the marker: from the stored row of session "s1"
# (tags ["a", marker]) or from the caller's value.
VALIDATOR_CALLS: dict[str, Callable[[MetadataStore[Guarded], str], Awaitable[object]]] = {
    "get_metadata": lambda g, m: g.bind("s1").get_metadata(),
    "get_metadata(keys)": lambda g, m: g.bind("s1").get_metadata(keys=["tags"]),
    "get_metadata, on_invalid=default": lambda g, m: (
        MetadataStore(Guarded, g.engine, on_invalid="default").bind("s1").get_metadata()
    ),
    "get_metadata_versioned": lambda g, m: g.bind("s1").get_metadata_versioned(),
    "add_to": lambda g, m: g.bind("s1").add_to("tags", "x"),
    "remove_from": lambda g, m: g.bind("s1").remove_from("tags", "a"),
    "list_sessions": lambda g, m: g.list_sessions(),
    "get_many": lambda g, m: g.get_many(["s1"]),
    "check_store": lambda g, m: check_store(g),
    "scoped get_metadata": lambda g, m: g.scoped(owner_id="u1").bind("s1").get_metadata(),
    "scoped add_to": lambda g, m: g.scoped(owner_id="u1").bind("s1").add_to("tags", "x"),
    "scoped list_sessions": lambda g, m: g.scoped(owner_id="u1").list_sessions(),
    "scoped get_many": lambda g, m: g.scoped(owner_id="u1").get_many(["s1"]),
    "set_metadata": lambda g, m: g.bind("s2").set_metadata({"tags": [m]}),
    "set_many": lambda g, m: g.set_many({"s3": {"tags": ["c"]}, "s2": {"tags": [m]}}),
    "set_metadata(expected_version)": _conditional_write,
    "add_to the marker": lambda g, m: g.bind("s2").add_to("tags", m),
    "contains filter": lambda g, m: g.find_sessions(field("tags").contains(m)),
    "find_sessions_by_metadata": lambda g, m: g.find_sessions_by_metadata("tags", [m]),
}


@pytest.mark.parametrize(("marker", "raised"), [("trip-key", KeyError), ("trip-app", AppError)])
@pytest.mark.parametrize("call", VALIDATOR_CALLS.values(), ids=VALIDATOR_CALLS.keys())
async def test_an_exception_from_the_applications_validator_propagates_unchanged(
    store: Store,
    engine: AsyncEngine,
    marker: str,
    raised: type[Exception],
    call: Callable[[MetadataStore[Guarded], str], Awaitable[object]],
) -> None:
    # Stored through the model without the validator, as an older deployment would.
    await store.bind("s1").set_metadata({"owner_id": "u1", "tags": ["a", marker]})
    await store.bind("s2").set_metadata({"owner_id": "u1", "tags": ["b"]})
    guarded = MetadataStore(Guarded, engine)
    with pytest.raises(raised) as caught:
        await call(guarded, marker)
    # The very exception: not wrapped, not a subclass such as UnknownKeyError.
    assert type(caught.value) is raised
    assert caught.value.args == (marker,)
    # Nothing was written, and the connection went back to the pool usable.
    assert (await store.bind("s2").get_metadata()).tags == ["b"]


# ---- the command line ------------------------------------------------------------------

# Before the limits, 300 conditions keep PostgreSQL planning for about two minutes.
COMMAND_SECONDS = 30


async def run_within(seconds: float, *args: str, url: str) -> Result:
    """``sessionmeta ARGS`` as a subprocess, interrupted (as by Ctrl-C) after ``seconds``."""
    process = await asyncio.create_subprocess_exec(
        *entry_point(),
        *args,
        cwd=ROOT,
        env=cli_env(url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), seconds)
    except asyncio.TimeoutError:
        # SIGINT lets the command cancel its query on the server before it exits.
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
        pytest.fail(f"sessionmeta {' '.join(args)[:80]} ran for {seconds} s instead of a refusal")
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


FORGED_CURSOR = b64(b"forged-cursor")
CLI_CASES = [
    pytest.param(["find", "priority>1", "--limit", "100000"], ("limit", "100000"), id="limit"),
    pytest.param(["find", "priority>1", "--limit", "0"], ("limit", "0"), id="limit 0"),
    pytest.param(
        ["find", "priority>1", "--cursor", FORGED_CURSOR], ("cursor", FORGED_CURSOR), id="cursor"
    ),
    # A command line cannot nest groups, but it can give too many conditions.
    pytest.param(
        ["find", *(f"priority>{n}" for n in range(300))],
        (str(MAX_CONDITIONS),),
        id="300 conditions",
    ),
]


@pytest.fixture
async def cli_url(engine: AsyncEngine, db_url: str) -> str:
    """The test database, with the tables and one session."""
    store = MetadataStore(ChatMeta, engine, create_tables=True)
    await store.bind("s1").set_metadata({"owner_id": "u1", "priority": 3})
    return db_url


@pytest.mark.parametrize(("args", "fragments"), CLI_CASES)
async def test_command_line_refuses_bad_input_in_one_line(
    cli_url: str, args: list[str], fragments: tuple[str, ...]
) -> None:
    result = await run_within(COMMAND_SECONDS, *args, url=cli_url)
    assert "Traceback" not in result.err, result.err[-2000:]
    # Refused by sessionmeta, not by argparse for an option it does not know.
    assert "unrecognized arguments" not in result.err, result.err
    assert_refused(result, *fragments)
