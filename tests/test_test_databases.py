"""The suite's own databases: created where the server allows, a one-line reason where not."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from .conftest import MYSQL_URL, POSTGRES_URL, _probe, require_server

SERVERS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


def test_the_default_databases_are_the_suites_own() -> None:
    # The suite drops every table of these databases: never a name other software uses.
    for variable in ("SESSIONMETA_TEST_POSTGRES_URL", "SESSIONMETA_TEST_MYSQL_URL"):
        if variable not in os.environ:
            url = POSTGRES_URL if "POSTGRES" in variable else MYSQL_URL
            assert make_url(url).database == "sessionmeta_test"


async def run_on_server(server: str, *statements: str) -> None:
    """Run ``statements`` as the suite's user, outside any database of the suite's."""
    url = make_url(POSTGRES_URL if server == "postgres" else MYSQL_URL)
    url = url.set(database="postgres" if server == "postgres" else "")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def quoted(server: str, name: str) -> str:
    return f'"{name}"' if server == "postgres" else f"`{name}`"


@pytest.fixture
def reachable(server: str) -> str:
    require_server(server)
    return server


@pytest.fixture
async def missing_database(reachable: str) -> AsyncIterator[str]:
    """The name of a database that does not exist, dropped again after the test."""
    server = reachable
    name = f"sessionmeta_test_created_{os.getpid()}"
    await run_on_server(server, f"DROP DATABASE IF EXISTS {quoted(server, name)}")
    yield name
    await run_on_server(server, f"DROP DATABASE IF EXISTS {quoted(server, name)}")


@pytest.mark.parametrize("server", SERVERS)
async def test_a_missing_database_is_created(server: str, missing_database: str) -> None:
    server_url = make_url(POSTGRES_URL if server == "postgres" else MYSQL_URL)
    url = server_url.set(database=missing_database).render_as_string(hide_password=False)
    assert await _probe(url) is None
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("server", SERVERS)
async def test_a_server_that_refuses_creation_gives_one_line(
    server: str, missing_database: str
) -> None:
    user = f"sessionmeta_nocreate_{os.getpid()}"
    if server == "postgres":
        create = [f'DROP ROLE IF EXISTS "{user}"', f'CREATE ROLE "{user}" LOGIN NOCREATEDB']
        drop = [f'DROP ROLE IF EXISTS "{user}"']
    else:
        # Allowed to read the database but not to create it: the server says it is
        # missing (not "access denied"), and then refuses CREATE DATABASE.
        create = [
            f"DROP USER IF EXISTS '{user}'@'%'",
            f"CREATE USER '{user}'@'%'",
            f"GRANT SELECT ON `{missing_database}`.* TO '{user}'@'%'",
        ]
        drop = [f"DROP USER IF EXISTS '{user}'@'%'"]
    await run_on_server(server, *create)
    try:
        url = make_url(POSTGRES_URL if server == "postgres" else MYSQL_URL)
        url = url.set(username=user, password=None, database=missing_database)
        reason = await _probe(url.render_as_string(hide_password=False))
    finally:
        await run_on_server(server, *drop)
    assert reason is not None and "\n" not in reason
    assert reason.startswith(f"database {missing_database!r} does not exist and could not be")
    assert "denied" in reason.lower()
