"""Shared fixtures: one suite, run against SQLite, PostgreSQL and MariaDB/MySQL.

PostgreSQL and MySQL are taken from ``SESSIONMETA_TEST_POSTGRES_URL`` and
``SESSIONMETA_TEST_MYSQL_URL`` (default: the database ``sessionmeta_test`` on this
machine's local servers, created when missing and the server allows it). A server
that does not answer skips its tests with one line, or fails the run when
``CI=true``. Each test starts on an empty database: every test wipes it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta import MetadataStore

from .models import ChatMeta

# A database of its own, never a name other software uses: the suite drops every table in it.
POSTGRES_URL = os.environ.get(
    "SESSIONMETA_TEST_POSTGRES_URL",
    "postgresql+asyncpg://postgres@127.0.0.1:5432/sessionmeta_test",
)
MYSQL_URL = os.environ.get(
    "SESSIONMETA_TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/sessionmeta_test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

BACKENDS = ("sqlite", "postgres", "mysql")
_reachable: dict[str, str | None] = {}


def server_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'sessionmeta.sqlite3'}"
    return POSTGRES_URL if backend == "postgres" else MYSQL_URL


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


async def _connect_error(url: str | URL, **engine_kwargs: Any) -> Exception | None:
    """What connecting to ``url`` and running ``SELECT 1`` raised, or None."""
    engine = create_async_engine(url, **engine_kwargs)

    async def select_one() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(select_one(), timeout=5)
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    return None


def _is_missing_database(exc: Exception) -> bool:
    """Whether the server answered that the URL's database does not exist."""
    # SQLAlchemy 2.1 wraps the driver's error; 2.0 lets asyncpg's through at connect time.
    driver_error = getattr(exc, "orig", exc)
    if getattr(driver_error, "sqlstate", None) == "3D000":  # PostgreSQL: invalid_catalog_name
        return True
    args: tuple[Any, ...] = getattr(driver_error, "args", ())
    return bool(args) and args[0] == 1049  # MySQL/MariaDB: ER_BAD_DB_ERROR


async def create_database(url: str) -> str | None:
    """Create ``url``'s database through the server's own connection; None, or why not.

    PostgreSQL is reached through its ``postgres`` database, MySQL/MariaDB with no
    database selected. A database another run created meanwhile counts as created.
    """
    target = make_url(url)
    name = target.database
    if not name:
        return "the URL names no database"
    if target.get_backend_name() == "postgresql":
        server = target.set(database="postgres")
        statement = 'CREATE DATABASE "{}"'.format(name.replace('"', '""'))
    else:
        server = target.set(database="")
        statement = "CREATE DATABASE IF NOT EXISTS `{}`".format(name.replace("`", "``"))
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    except Exception as exc:
        if await _connect_error(url) is None:
            return None  # created by a concurrent run
        return _one_line(exc)
    finally:
        await engine.dispose()
    return None


async def _probe(url: str) -> str | None:
    """None when ``url`` answers (its database created if missing), else a one-line reason."""
    error = await _connect_error(url)
    if error is None:
        return None
    if not _is_missing_database(error):
        return _one_line(error)
    name = make_url(url).database
    refusal = await create_database(url)
    if refusal is not None:
        return f"database {name!r} does not exist and could not be created ({refusal})"
    error = await _connect_error(url)
    return None if error is None else _one_line(error)


def require_server(backend: str) -> None:
    """Skip (or, under CI, fail) when ``backend``'s server does not answer."""
    if backend == "sqlite":
        return
    if backend not in _reachable:
        url = POSTGRES_URL if backend == "postgres" else MYSQL_URL
        _reachable[backend] = asyncio.run(_probe(url))
    problem = _reachable[backend]
    if problem is not None:
        shown = make_url(POSTGRES_URL if backend == "postgres" else MYSQL_URL)
        message = (
            f"{backend} at {shown.render_as_string(hide_password=True)} unreachable: {problem}"
        )
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


async def reset_database(engine: AsyncEngine) -> None:
    """Drop every table, so each test starts from an empty database."""
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
        elif engine.dialect.name in ("mysql", "mariadb"):
            rows = await connection.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = DATABASE()"
                )
            )
            names = [row[0] for row in rows]
            if names:
                await connection.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
                await connection.execute(
                    text("DROP TABLE IF EXISTS " + ", ".join(f"`{name}`" for name in names))
                )
                await connection.execute(text("SET FOREIGN_KEY_CHECKS = 1"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        # A module may run on fewer backends: its own BACKENDS.
        backends = getattr(metafunc.module, "BACKENDS", BACKENDS)
        metafunc.parametrize(
            "backend",
            [pytest.param(name, marks=getattr(pytest.mark, name)) for name in backends],
        )


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> str:
    require_server(backend)
    return server_url(backend, tmp_path)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(db_url)
    await reset_database(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> MetadataStore[ChatMeta]:
    store = MetadataStore(ChatMeta, engine, create_tables=True)
    await store.create_tables()
    return store


async def connection_budget(engine: AsyncEngine, wanted: int) -> int:
    """How many more connections the server accepts, at most ``wanted``, keeping a margin.

    The servers' default limits (PostgreSQL 100, MariaDB 151) are shared with whatever
    else runs against them, so a test that wants many connections takes what is free.
    """
    if engine.dialect.name == "sqlite":
        return wanted
    async with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            limit = await connection.scalar(text("SELECT current_setting('max_connections')::int"))
            used = await connection.scalar(text("SELECT count(*) FROM pg_stat_activity"))
        else:
            limit = await connection.scalar(text("SELECT @@max_connections"))
            used = (await connection.execute(text("SHOW STATUS LIKE 'Threads_connected'"))).one()[1]
    return max(1, min(wanted, int(limit) - int(used) - 5))


@pytest.fixture
async def wide_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An empty database behind a pool of up to 100 connections, one per concurrent writer."""
    probe = create_async_engine(db_url)
    try:
        await reset_database(probe)
        size = await connection_budget(probe, 100)
    finally:
        await probe.dispose()
    engine = create_async_engine(db_url, pool_size=size, max_overflow=0, pool_timeout=120)
    try:
        yield engine
    finally:
        await engine.dispose()
