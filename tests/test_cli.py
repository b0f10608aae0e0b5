"""The `sessionmeta` command through its real entry point, as a subprocess, on every backend."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, SessionMeta
from sessionmeta.cli.output import ProgressLog

from .models import ChatMeta
from .test_store import session_rows, stored_rows

ROOT = Path(__file__).resolve().parent.parent
MODEL = "tests.models:ChatMeta"


def entry_point() -> list[str]:
    """The installed console script when there is one, else ``python -m sessionmeta``."""
    script = Path(sys.executable).parent / "sessionmeta"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sessionmeta"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


def cli_env(url: str | None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SESSIONMETA_")}
    # The subprocess imports this checkout's code, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["SESSIONMETA_MODEL"] = MODEL
    if url is not None:
        env["SESSIONMETA_URL"] = url
    env.update(extra)
    return env


async def run(
    *args: str, url: str | None = None, command: list[str] | None = None, **env: str
) -> Result:
    process = await asyncio.create_subprocess_exec(
        *(command or entry_point()),
        *args,
        cwd=ROOT,
        env=cli_env(url, **env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def assert_refused(result: Result, *fragments: str) -> None:
    """Exit code 2 and one line on stderr naming what was wrong."""
    assert result.code == 2, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("sessionmeta: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def url(engine: AsyncEngine, db_url: str) -> str:
    """The test database, emptied, without tables: `sessionmeta init` makes them."""
    return db_url


async def test_init_set_show_delete(url: str, engine: AsyncEngine) -> None:
    init = await run("init", url=url)
    assert init.code == 0, init
    assert "agent_sessions_metadata" in init.out
    written = await run("set", "s1", "title=Refund", "priority=2", 'tags=["a","b"]', url=url)
    assert written.code == 0, written
    assert await stored_rows(engine, "s1") == {
        "title": '"Refund"',
        "priority": "2",
        "tags": '["a","b"]',
    }
    shown = await run("show", "s1", "--json", url=url)
    assert shown.code == 0, shown
    document = shown.json()
    assert isinstance(document, dict)
    assert document["metadata"] == {
        "owner_id": None,
        "title": "Refund",
        "tags": ["a", "b"],
        "incognito": None,
        "priority": 2,
    }
    assert document["stored_keys"] == ["priority", "tags", "title"]
    table = await run("show", "s1", url=url)
    lines = table.out.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "STATUS"]
    assert ["title", '"Refund"', "stored"] in [line.split() for line in lines]
    assert ["owner_id", "null", "default"] in [line.split() for line in lines]
    deleted = await run("delete", "s1", "tags", "priority", url=url)
    assert deleted.code == 0, deleted
    assert await stored_rows(engine, "s1") == {"title": '"Refund"'}
    everything = await run("delete", "s1", "--json", url=url)
    assert everything.json() == {"session_id": "s1", "deleted": "all"}
    assert await stored_rows(engine, "s1") == {}


async def test_value_text_is_json_when_it_fits_the_field_else_text(
    url: str, engine: AsyncEngine
) -> None:
    assert (await run("init", url=url)).code == 0
    result = await run(
        "set", "s", "title=123", "priority=7", "incognito=true", "owner_id=null", url=url
    )
    assert result.code == 0, result
    assert await stored_rows(engine, "s") == {
        "title": '"123"',
        "priority": "7",
        "incognito": "true",
        "owner_id": "null",
    }
    forced = await run("set", "s", 'title="null"', url=url)
    assert forced.code == 0, forced
    assert (await stored_rows(engine, "s"))["title"] == '"null"'


async def test_bad_values_and_keys_are_refused_and_nothing_is_written(
    url: str, engine: AsyncEngine
) -> None:
    assert (await run("init", url=url)).code == 0
    bad_value, unknown, not_assignment, bad_list, long_id, unknown_delete = await asyncio.gather(
        run("set", "s", "title=ok", "priority=high", url=url),
        run("set", "s", "title=ok", "colour=red", url=url),
        run("set", "s", "title", url=url),
        run("set", "s", "title=ok", "tags=a,b", url=url),
        run("set", "x" * 300, "title=ok", url=url),
        run("delete", "s", "colour", url=url),
    )
    assert_refused(bad_value, "'s'", "priority", "'high'")
    assert_refused(unknown, "colour")
    assert_refused(not_assignment, "key=value")
    assert_refused(bad_list, "tags")
    assert_refused(long_id, "300 characters")
    assert_refused(unknown_delete, "colour")
    assert await session_rows(engine) == []


async def test_find_by_equality(url: str, engine: AsyncEngine) -> None:
    store = MetadataStore(ChatMeta, engine, create_tables=True)
    for sid, owner in [("b", "ann"), ("a", "ann"), ("c", "bob")]:
        await store.bind(sid).set_metadata({"owner_id": owner, "priority": 1})
    found = await run("find", "owner_id=ann", "--json", url=url)
    assert found.code == 0, found
    assert found.json() == {"sessions": ["a", "b"], "limit": 100, "next_cursor": None}
    limited = await run("find", "priority=1", "--limit", "2", url=url)
    lines = limited.out.splitlines()
    assert lines[:4] == ["SESSION_ID", "a", "b", "2 sessions"]
    assert lines[4].startswith("more: --cursor ")
    rest = await run("find", "priority=1", "--limit", "2", *lines[4].split()[1:], url=url)
    assert rest.out.splitlines() == ["SESSION_ID", "c", "1 session"]
    none = await run("find", "owner_id=zed", "--json", url=url)
    assert none.json() == {"sessions": [], "limit": 100, "next_cursor": None}


async def test_find_with_the_query_operators(url: str, engine: AsyncEngine) -> None:
    store = MetadataStore(ChatMeta, engine, create_tables=True)
    await store.bind("a").set_metadata({"owner_id": "ann", "priority": 9, "tags": ["work"]})
    await store.bind("b").set_metadata({"owner_id": "ann", "priority": 10, "title": "t"})
    await store.bind("c").set_metadata({"owner_id": "bob", "priority": 2, "tags": ["home"]})
    cases = [
        (["priority>2"], ["a", "b"]),  # numeric order: 9 < 10
        (["priority>=10"], ["b"]),
        (["owner_id!=ann"], ["c"]),
        (["tags~work"], ["a"]),
        (["title?"], ["b"]),
        (["!tags"], ["b"]),
        (["owner_id:in=bob,zed"], ["c"]),
        (["owner_id=ann", "priority<10"], ["a"]),
    ]
    results = await asyncio.gather(
        *(run("find", *conditions, "--json", url=url) for conditions, _ in cases)
    )
    for (conditions, expected), result in zip(cases, results, strict=True):
        assert result.code == 0, (conditions, result)
        assert result.json() == {"sessions": expected, "limit": 100, "next_cursor": None}, (
            conditions
        )


async def test_find_refuses_bad_conditions(url: str) -> None:
    assert (await run("init", url=url)).code == 0
    cases = [
        ("colour=red", "colour"),
        ("title:like=x", "unknown operator 'like'"),
        ("title", "no operator"),
        ("priority=high", "priority"),
        ("tags>1", "tags"),
    ]
    results = await asyncio.gather(*(run("find", condition, url=url) for condition, _ in cases))
    for (_, fragment), result in zip(cases, results, strict=True):
        assert_refused(result, fragment)


async def test_check_reports_and_fails_on_values_that_would_not_read(
    url: str, engine: AsyncEngine
) -> None:
    class Older(SessionMeta):
        priority: int | None = None
        retired: str | None = None

    old = MetadataStore(Older, engine, create_tables=True)
    for index in range(4):
        await old.bind(f"s{index}").set_metadata({"priority": index, "retired": "x"})
    clean = await run("check", "--json", url=url)
    assert clean.code == 0, clean
    report = clean.json()
    assert isinstance(report, dict)
    assert (report["ok"], report["rows"], report["sessions"]) == (True, 8, 4)
    assert report["undeclared_keys"] == {
        "retired": {"rows": 4, "example_sessions": ["s0", "s1", "s2", "s3"]}
    }
    strict = await run("check", "--strict", url=url)
    assert strict.code == 1
    assert "FAIL" in strict.out
    values = old.tables.values
    async with engine.begin() as connection:
        await connection.execute(
            update(values)
            .where(values.c.session_id == "s2", values.c.key == "priority")
            .values(value='"urgent"')
        )
    failing = await run("check", "--json", "--batch-size", "3", url=url)
    assert failing.code == 1, failing
    report = failing.json()
    assert isinstance(report, dict)
    assert report["invalid"] == [
        {
            "session_id": "s2",
            "key": "priority",
            "stored_text": '"urgent"',
            "reason": "Input should be a valid integer, unable to parse string as an integer",
        }
    ]
    assert report["keys"]["priority"] == {"declared": True, "rows": 4, "invalid": 1}
    table = await run("check", url=url)
    assert table.code == 1
    assert any(
        line.split()[:3] == ["s2", "priority", '"urgent"'] for line in table.out.splitlines()
    )
    # Not on a terminal: no bar redrawn in place, but whole lines, the first before
    # the scan and the last at its end.
    assert table.err.splitlines() == ["checking 8 rows", "checked 8/8 rows (100%)"]
    quiet = await run("check", "--no-progress", url=url)
    assert (quiet.code, quiet.err) == (1, "")
    # The row is reported, never repaired.
    assert (await stored_rows(engine, "s2"))["priority"] == '"urgent"'


@pytest.mark.sqlite
async def test_check_draws_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    assert (await run("demo", url=url)).code == 0
    leader, follower = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        *entry_point(),
        "check",
        "--model",
        "sessionmeta.demo:SupportTicket",
        cwd=ROOT,
        env=cli_env(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=follower,
    )
    out, _ = await process.communicate()
    os.close(follower)
    drawn = os.read(leader, 65536).decode()
    os.close(leader)
    assert process.returncode == 0
    assert "checking [" in drawn
    assert "23/23 rows" in drawn
    assert "checking" not in out.decode()


def test_progress_lines_come_at_most_once_per_interval() -> None:
    now = [0.0]
    stream = io.StringIO()
    log = ProgressLog(100_000, stream, every=5.0, clock=lambda: now[0])
    # A batch of 1,000 rows every 1/8 s: 12.5 s for the whole scan.
    for done in range(1_000, 100_001, 1_000):
        now[0] += 0.125
        log(done)
    log.close()
    assert stream.getvalue().splitlines() == [
        "checking 100,000 rows",
        "checked 40,000/100,000 rows (40%)",
        "checked 80,000/100,000 rows (80%)",
        "checked 100,000/100,000 rows (100%)",
    ]


async def test_demo_writes_sample_sessions_that_show_and_check(url: str) -> None:
    demo = await run("demo", url=url)
    assert demo.code == 0, demo
    assert "demo-1" in demo.out
    again = await run("demo", "--json", url=url)
    document = again.json()
    assert isinstance(document, dict)
    assert sorted(document["sessions"]) == ["demo-1", "demo-2", "demo-3", "demo-4"]
    model = "sessionmeta.demo:SupportTicket"
    shown = await run("show", "demo-2", "--json", "--model", model, url=url)
    metadata = shown.json()
    assert isinstance(metadata, dict)
    assert metadata["metadata"]["status"] == "waiting"
    assert (await run("check", url=url, SESSIONMETA_MODEL=model)).code == 0
    # Against another model, the demo's keys are undeclared but nothing fails.
    assert (await run("check", url=url)).code == 0


async def test_show_without_a_model_prints_the_stored_json(url: str, engine: AsyncEngine) -> None:
    await (
        MetadataStore(ChatMeta, engine, create_tables=True).bind("s").set_metadata({"tags": ["x"]})
    )
    shown = await run("show", "s", "--json", url=url, SESSIONMETA_MODEL="")
    assert shown.json() == {"session_id": "s", "stored": {"tags": ["x"]}}


async def test_commands_refuse_a_database_without_the_tables(url: str, engine: AsyncEngine) -> None:
    for args in (["show", "s"], ["set", "s", "title=x"], ["find", "title=x"], ["check"]):
        assert_refused(await run(*args, url=url), "sessionmeta init")
    assert await session_rows_or_none(engine) is None


async def session_rows_or_none(engine: AsyncEngine) -> list[str] | None:
    try:
        return await session_rows(engine)
    except Exception:
        return None


# ---- input refused before any database is touched (no backend needed) -----------------


async def test_malformed_urls_are_refused(tmp_path: Path) -> None:
    for url, fragment in [
        ("not a url", "malformed database URL"),
        ("postgresql://u@h:port/db", "malformed database URL"),
        ("oracle://u@h/db", "driver 'oracle'"),
    ]:
        assert_refused(await run("show", "s", url=url), fragment)


@pytest.mark.postgres
async def test_a_database_that_refuses_connections_is_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: the connection is refused at once.
    url = f"postgresql://nobody@127.0.0.1:{port}/db"
    assert_refused(await run("show", "s", url=url), "cannot connect", f"127.0.0.1:{port}")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.mark.parametrize(
    "scheme",
    [
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
async def test_a_database_that_does_not_answer_times_out(silent_server: int, scheme: str) -> None:
    url = f"{scheme}://nobody@127.0.0.1:{silent_server}/db"
    result = await run("--connect-timeout", "1", "show", "s", url=url)
    assert result.code == 2, result
    assert len(result.err.splitlines()) == 1
    assert f"127.0.0.1:{silent_server}" in result.err


async def test_sqlite_file_is_not_created_by_a_read(tmp_path: Path) -> None:
    path = tmp_path / "missing.sqlite3"
    assert_refused(await run("show", "s", url=f"sqlite:///{path}"), "no database file")
    assert_refused(await run("set", "s", "title=x", url=f"sqlite:///{path}"), "no database file")
    assert not path.exists()


async def test_default_database_is_a_sqlite_file_in_the_current_directory(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *entry_point(),
        "init",
        cwd=tmp_path,
        env=cli_env(None),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err
    assert (tmp_path / "sessionmeta.sqlite3").exists()


async def test_a_model_that_does_not_import_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    cases = [
        ("no_such_package.models:Meta", "cannot import model module 'no_such_package.models'"),
        ("tests.models:Missing", "has no 'Missing'"),
        ("tests.models:Settings", "not a subclass of sessionmeta.SessionMeta"),
        ("tests.models", "package.module:ClassName"),
    ]
    results = await asyncio.gather(
        *(run("set", "s", "title=x", url=url, SESSIONMETA_MODEL=model) for model, _ in cases),
        *(run("schema", "--model", model) for model, _ in cases),
    )
    for (_, fragment), result in zip(cases + cases, results, strict=True):
        assert_refused(result, fragment)
    assert not (tmp_path / "db.sqlite3").exists()


async def test_commands_that_need_a_model_say_how_to_give_one() -> None:
    assert_refused(await run("schema", SESSIONMETA_MODEL=""), "--model", "SESSIONMETA_MODEL")


async def test_ddl_is_the_schemas_directory() -> None:
    for dialect in ("postgresql", "mysql", "sqlite"):
        result = await run("ddl", "--dialect", dialect)
        assert result.code == 0, result
        expected = (ROOT / "schemas" / f"{dialect}.sql").read_text()
        assert expected.endswith(result.out)
    assert_refused(await run("ddl", "--dialect", "oracle"), "invalid choice")


async def test_schema_is_the_models_json_schema() -> None:
    result = await run("schema")
    assert result.code == 0, result
    assert result.json() == ChatMeta.model_json_schema(by_alias=True)


DATABASE = {"--url", "--connect-timeout", "--sessions-table", "--metadata-table", "--json"}
# Each command's help lists the options it reads, and no other.
# The commands that read a model read the keys of its encrypted fields too.
WITH_MODEL = DATABASE | {"--model", "--keys-file"}
COMMANDS = {
    "init": DATABASE,
    "show": WITH_MODEL,
    "set": WITH_MODEL,
    "delete": WITH_MODEL,
    "find": WITH_MODEL | {"--limit", "--cursor"},
    "list": WITH_MODEL | {"--columns", "--where", "--order-by", "--limit", "--cursor"},
    "check": WITH_MODEL | {"--strict", "--batch-size", "--max-examples", "--no-progress"},
    "rehash": WITH_MODEL | {"--batch-size"},
    "rekey": WITH_MODEL | {"--batch-size"},
    "sweep": DATABASE | {"--batch-size", "--max-batches", "--pause"},
    "ddl": {
        "--sessions-table",
        "--metadata-table",
        "--dialect",
        "--if-not-exists",
        "--only-metadata",
    },
    "schema": {"--model"},
    "demo": DATABASE,
}


def options_in(help_text: str) -> set[str]:
    """The long options a help text lists in its option sections (not in the usage line)."""
    listed = help_text.split("\n\n", 2)[-1]
    return set(re.findall(r"^  (?:-\w, )?(--[a-z-]+)", listed, re.MULTILINE)) - {"--help"}


async def test_every_command_has_help_listing_only_its_options() -> None:
    top = await run("--help")
    assert top.code == 0
    names = list(COMMANDS)
    results = await asyncio.gather(*(run(name, "--help") for name in names))
    for name, result in zip(names, results, strict=True):
        assert re.search(rf"^    {name} ", top.out, re.MULTILINE), name
        assert result.code == 0, result
        assert f"usage: sessionmeta {name}" in result.out
        assert options_in(result.out) == COMMANDS[name], name
        usage = result.out.split("\n\n", 1)[0]
        assert set(re.findall(r"--[a-z-]+", usage)) - {"--help"} <= COMMANDS[name], name
    # Before the command, the shared options are still taken, as they always were.
    ddl = await run("--json", "--url", "sqlite:///x", "ddl", "--dialect", "sqlite")
    assert ddl.code == 0, ddl
    assert_refused(await run("ddl", "--dialect", "sqlite", "--url", "sqlite:///x"), "--url")


async def test_python_dash_m_and_the_console_script_agree() -> None:
    module = await run("--version", command=[sys.executable, "-m", "sessionmeta"])
    assert module.code == 0
    assert module.out.startswith("sessionmeta ")
    script = shutil.which("sessionmeta", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the package is not installed: no console script next to the interpreter")
    installed = await run("--version", command=[script])
    assert installed.out == module.out


async def test_unknown_command_and_option_are_one_line() -> None:
    assert_refused(await run("frobnicate"), "invalid choice")
    assert_refused(await run("show", "s", "--nope"), "--nope")
