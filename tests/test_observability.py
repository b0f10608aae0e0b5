"""What operators see of the store: its statements in OpenTelemetry spans, in SQLAlchemy's
``before_cursor_execute`` events and in ``echo=True`` logs, its own debug log; and the
store on psycopg (async) as on asyncpg.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta import ConflictError, MetadataStore, field

from .conftest import POSTGRES_URL, require_server, reset_database
from .dbstate import session_ids, stored_rows
from .models import ChatMeta

METADATA_TABLE = "agent_sessions_metadata"

Operation = Callable[[MetadataStore[ChatMeta]], Awaitable[object]]

# Each runs against a store where "s1" holds owner_id "u1" and a title. Insertion order
# matters to the echo test, which runs them one after another on one store.
OPERATIONS: dict[str, Operation] = {
    "set": lambda store: store.bind("s1").set_metadata({"title": "Renamed", "tags": ["a"]}),
    "get": lambda store: store.bind("s1").get_metadata(),
    "get_versioned": lambda store: store.bind("s1").get_metadata_versioned(),
    "add_to": lambda store: store.bind("s1").add_to("tags", "b"),
    "find": lambda store: store.find_sessions(field("owner_id") == "u1"),
    "list": lambda store: store.list_sessions(field("owner_id") == "u1"),
    "count": lambda store: store.count_sessions(field("owner_id") == "u1"),
    "delete": lambda store: store.bind("s1").delete_metadata(keys=["title"]),
}


async def seed(store: MetadataStore[ChatMeta]) -> None:
    await store.bind("s1").set_metadata({"owner_id": "u1", "title": "Draft"})


# --- OpenTelemetry ---------------------------------------------------------------------


def statement_of(span: ReadableSpan) -> str | None:
    """The SQL a span records (old or stable semantic conventions); None for other spans,
    such as the instrumentation's ``connect`` span around ``Engine.connect()``."""
    attributes = span.attributes or {}
    for name in ("db.statement", "db.query.text"):
        value = attributes.get(name)
        if isinstance(value, str):
            return value
    return None


def statements(exporter: InMemorySpanExporter) -> list[str]:
    """The statement of each finished statement span, in order."""
    found = (statement_of(span) for span in exporter.get_finished_spans())
    return [statement for statement in found if statement is not None]


@pytest.fixture
async def spans(engine: AsyncEngine) -> AsyncIterator[InMemorySpanExporter]:
    """OpenTelemetry's SQLAlchemy instrumentation on ``engine``, exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = SQLAlchemyInstrumentor()
    # The instrumentation declares "sqlalchemy < 2.1"; on 2.1 it instruments nothing (one
    # log line, no error) unless told to skip that check.
    instrumentor.instrument(
        engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )
    try:
        # The instrumentation itself works: a plain statement is one span.
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        assert statements(exporter) == ["SELECT 1"], "the instrumentation records nothing"
        exporter.clear()
        yield exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


async def test_get_metadata_is_one_span(
    store: MetadataStore[ChatMeta], spans: InMemorySpanExporter
) -> None:
    await seed(store)
    spans.clear()
    read = await store.bind("s1").get_metadata()
    assert read.title == "Draft"
    seen = statements(spans)
    assert len(seen) == 1, f"expected one statement span, got {seen}"
    assert METADATA_TABLE in seen[0]


async def test_find_sessions_is_one_span(
    store: MetadataStore[ChatMeta], spans: InMemorySpanExporter
) -> None:
    await seed(store)
    spans.clear()
    assert await store.find_sessions(field("owner_id") == "u1") == ["s1"]
    seen = statements(spans)
    assert len(seen) == 1, f"expected one statement span, got {seen}"
    assert METADATA_TABLE in seen[0]


async def test_set_metadata_is_seen_as_spans(
    store: MetadataStore[ChatMeta], spans: InMemorySpanExporter
) -> None:
    # A new session (its row is created too), then an existing one.
    for values in ({"owner_id": "u1", "tags": ["a"]}, {"title": "Again"}):
        spans.clear()
        await store.bind("s1").set_metadata(values)
        seen = statements(spans)
        assert seen, "set_metadata produced no statement span"
        assert any(METADATA_TABLE in statement for statement in seen), seen


# --- SQLAlchemy events and echo ----------------------------------------------------------


@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_before_cursor_execute_sees_the_store_s_statements(
    store: MetadataStore[ChatMeta], engine: AsyncEngine, name: str
) -> None:
    await seed(store)
    seen: list[str] = []

    def before_cursor_execute(
        connection: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
    try:
        await OPERATIONS[name](store)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
    assert len(seen) > 0, f"{name}: no before_cursor_execute event"
    assert any(METADATA_TABLE in statement for statement in seen), seen


async def test_echo_logs_the_store_s_statements(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine_logger = logging.getLogger("sqlalchemy.engine.Engine")
    handlers = list(engine_logger.handlers)
    # echo=True adds a stdout handler to SQLAlchemy's engine logger: records propagate
    # to caplog too.
    engine = create_async_engine(db_url, echo=True)
    try:
        await reset_database(engine)
        store = MetadataStore(ChatMeta, engine, create_tables=True)
        await store.create_tables()
        await seed(store)
        for name, operation in OPERATIONS.items():
            caplog.clear()
            await operation(store)
            logged = [
                record.getMessage()
                for record in caplog.records
                if record.name == "sqlalchemy.engine.Engine"
            ]
            assert any(METADATA_TABLE in message for message in logged), (
                f"{name}: no echo log line mentions {METADATA_TABLE}: {logged}"
            )
    finally:
        await engine.dispose()
        # That handler holds this test's captured stdout: leave the logger as it was.
        engine_logger.handlers[:] = handlers


# --- sessionmeta's own log ---------------------------------------------------------------


async def test_debug_log_names_the_session(
    store: MetadataStore[ChatMeta], caplog: pytest.LogCaptureFixture
) -> None:
    session_id = "debug-log-session-7"
    caplog.set_level(logging.DEBUG, logger="sessionmeta")
    await store.bind(session_id).set_metadata({"owner_id": "u1", "title": "Logged"})
    ours = [
        record
        for record in caplog.records
        if record.name == "sessionmeta" or record.name.startswith("sessionmeta.")
    ]
    assert any(
        record.levelno == logging.DEBUG and session_id in record.getMessage() for record in ours
    ), f"no DEBUG record of sessionmeta names {session_id!r}: " + repr(
        [(record.levelname, record.getMessage()) for record in ours]
    )


# --- psycopg -----------------------------------------------------------------------------


@pytest.fixture
def psycopg_url() -> str:
    """The PostgreSQL test database, reached through psycopg 3 (async) instead of asyncpg.

    A synchronous fixture: ``require_server`` probes with ``asyncio.run``, which cannot
    run inside the test's event loop.
    """
    require_server("postgres")
    url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


@pytest.mark.postgres
async def test_psycopg_works_like_asyncpg(psycopg_url: str) -> None:
    engine = create_async_engine(psycopg_url)
    try:
        await reset_database(engine)
        assert engine.dialect.driver == "psycopg"
        # No explicit create_tables(): the first call creates them.
        store = MetadataStore(ChatMeta, engine, create_tables=True)
        meta = store.bind("p1")
        await meta.set_metadata(
            {"owner_id": "u1", "title": "Psycopg", "tags": ["a"], "incognito": False, "priority": 3}
        )
        await store.bind("p2").set_metadata({"owner_id": "u2", "priority": 7})

        assert await meta.get_metadata() == ChatMeta(
            owner_id="u1", title="Psycopg", tags=["a"], incognito=False, priority=3
        )
        assert (await meta.get_metadata(keys=["title"])).model_fields_set == {"title"}
        assert await store.find_sessions(field("owner_id") == "u1") == ["p1"]
        assert await store.find_sessions(field("priority") > 2) == ["p1", "p2"]
        assert await store.find_sessions(field("tags").contains("a")) == ["p1"]
        assert await store.find_sessions_by_metadata("owner_id", "u2") == ["p2"]
        page = await store.list_sessions(order_by="-priority")
        assert [(item.session_id, item.metadata.priority) for item in page] == [
            ("p2", 7),
            ("p1", 3),
        ]
        assert await store.count_sessions() == 2
        assert await store.count_sessions(field("owner_id") == "u1") == 1
        assert (await store.get_many(["p1", "p2"]))["p2"].owner_id == "u2"

        await asyncio.gather(meta.add_to("tags", "b"), meta.add_to("tags", "c"))
        tags = (await meta.get_metadata()).tags
        assert tags is not None and tags[0] == "a" and sorted(tags) == ["a", "b", "c"]
        assert await store.find_sessions(field("tags").contains("c")) == ["p1"]

        versioned = await meta.get_metadata_versioned()
        assert versioned.metadata.title == "Psycopg"
        await meta.set_metadata({"title": "Renamed"}, expected_version=versioned.version)
        with pytest.raises(ConflictError):
            await meta.set_metadata({"title": "Stale"}, expected_version=versioned.version)
        assert (await meta.get_metadata()).title == "Renamed"

        await meta.delete_metadata(keys=["title"])
        assert "title" not in await stored_rows(engine, "p1")
        await meta.delete_metadata()
        assert await stored_rows(engine, "p1") == {}
        assert await session_ids(engine) == ["p1", "p2"]
    finally:
        await engine.dispose()
