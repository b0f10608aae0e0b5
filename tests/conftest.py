"""Shared fixtures: one suite, run against SQLite, PostgreSQL and MariaDB/MySQL.

PostgreSQL and MySQL are taken from ``SESSIONMETA_TEST_POSTGRES_URL`` and
``SESSIONMETA_TEST_MYSQL_URL`` (default: this machine's local servers). A server
that does not answer skips its tests with one line, or fails the run when
``CI=true``. Each test starts on an empty database.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessionmeta import MetadataStore

from .models import ChatMeta

POSTGRES_URL = os.environ.get(
    "SESSIONMETA_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get(
    "SESSIONMETA_TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

BACKENDS = ("sqlite", "postgres", "mysql")
_reachable: dict[str, str | None] = {}


def server_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'sessionmeta.sqlite3'}"
    return POSTGRES_URL if backend == "postgres" else MYSQL_URL


async def _probe(url: str) -> str | None:
    engine = create_async_engine(url)

    async def select_one() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(select_one(), timeout=5)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        await engine.dispose()
    return None


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
        metafunc.parametrize(
            "backend",
            [pytest.param(name, marks=getattr(pytest.mark, name)) for name in BACKENDS],
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
