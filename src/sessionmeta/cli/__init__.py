"""The ``sessionmeta`` command: look inside and change session metadata from a shell.

Exit codes: 0 done; 1 ``check`` found stored values the model would refuse;
2 bad input or an unusable database, reported as one line on stderr with
nothing written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from sqlalchemy.engine import URL

from sessionmeta import __version__
from sessionmeta.cli.input import (
    DEFAULT_URL,
    UsageError,
    describe_validation_error,
    load_model,
    parse_assignments,
    parse_clause,
    parse_url,
)
from sessionmeta.cli.output import (
    ProgressBar,
    print_check_report,
    print_json,
    print_table,
    session_view,
)
from sessionmeta.core.codec import encode_model
from sessionmeta.core.plan import check_limit, plan_query
from sessionmeta.core.spec import ModelSpec, SessionMeta, check_session_id
from sessionmeta.errors import DatabaseError, SessionMetaError
from sessionmeta.io.check import (
    check_store,
    count_stored_rows,
    read_session_rows,
    rehash_store,
)
from sessionmeta.io.database import describe
from sessionmeta.io.store import MetadataStore
from sessionmeta.sql.dialects import BACKENDS, backend_named, create_ddl
from sessionmeta.sql.schema import build_tables

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


class _NoModel(SessionMeta):
    """Stands in where a command needs no model: every stored key is undeclared."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other refusal of this command.
        self.exit(2, f"sessionmeta: error: {message} (see {self.prog} --help)\n")


# ---- options shared by the commands -------------------------------------------------


def _model_path(args: argparse.Namespace) -> str | None:
    path: str | None = args.model or os.environ.get("SESSIONMETA_MODEL") or None
    return path


def _require_model(args: argparse.Namespace) -> type[SessionMeta]:
    path = _model_path(args)
    if path is None:
        raise UsageError("no model: give --model package.module:ClassName or set SESSIONMETA_MODEL")
    return load_model(path)


def _url(args: argparse.Namespace) -> URL:
    return parse_url(args.url or os.environ.get("SESSIONMETA_URL") or DEFAULT_URL)


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _engine_kwargs(url: URL, timeout: float) -> dict[str, Any]:
    backend = backend_named(url.get_backend_name())
    connect_args = backend.connect_timeout_args(url.get_driver_name(), timeout)
    return {"connect_args": connect_args} if connect_args else {}


def _sqlite_file(url: URL) -> Path | None:
    # A file the command line must not create by accident: SQLite's own URLs only.
    database = url.database
    if not backend_named(url.get_backend_name()).embedded:
        return None
    if not database or database == ":memory:":
        return None
    return Path(database)


async def _has_table(store: MetadataStore[Any], name: str) -> bool:
    return await store.db.has_table(name)


@asynccontextmanager
async def _open(
    args: argparse.Namespace, model: type[SessionMeta], *, create: bool = False
) -> AsyncIterator[MetadataStore[Any]]:
    """A store on the database, which must answer within the timeout and hold the tables.

    With ``create`` an SQLite file may be created and the tables may be missing.
    """
    url = _url(args)
    if not args.connect_timeout > 0:
        raise UsageError(f"--connect-timeout must be positive, not {args.connect_timeout:g}")
    path = _sqlite_file(url)
    if not create and path is not None and not path.exists():
        # Connecting would create an empty file: say so instead of writing anything.
        raise UsageError(
            f"no database file {str(path)!r}; run `sessionmeta init` (or `sessionmeta demo`) "
            "or give --url"
        )
    try:
        store = MetadataStore.from_url(
            model,
            url.render_as_string(hide_password=False),
            engine_kwargs=_engine_kwargs(url, args.connect_timeout),
            sessions_table=args.sessions_table,
            metadata_table=args.metadata_table,
        )
    except DatabaseError as exc:
        if isinstance(exc.__cause__, ModuleNotFoundError):
            extra = backend_named(url.get_backend_name()).extra
            raise UsageError(
                f"the driver for {_shown(url)} is not installed: {exc.__cause__}; "
                f"install sessionmeta[{extra}]"
            ) from None
        raise
    try:
        try:
            found = await asyncio.wait_for(
                _has_table(store, args.metadata_table), timeout=args.connect_timeout
            )
        except asyncio.TimeoutError:
            raise UsageError(
                f"database {_shown(url)} did not answer within {args.connect_timeout:g} s"
            ) from None
        except Exception as exc:
            raise UsageError(f"cannot connect to {_shown(url)}: {describe(exc)}") from None
        if not found and not create:
            raise UsageError(
                f"{_shown(url)} has no table {args.metadata_table!r}; run `sessionmeta init` first"
            )
        yield store
    finally:
        await store.close()


# ---- commands ------------------------------------------------------------------------


async def _init(args: argparse.Namespace) -> int:
    async with _open(args, _NoModel, create=True) as store:
        await store.create_tables()
    shown = _shown(_url(args))
    tables = [args.sessions_table, args.metadata_table]
    if args.json:
        print_json({"url": shown, "tables": tables})
    else:
        print(f"{shown}: tables {', '.join(tables)} are ready")
    return 0


async def _print_session(
    args: argparse.Namespace, store: MetadataStore[Any], spec: ModelSpec[Any] | None, sid: str
) -> None:
    rows = await read_session_rows(store, sid)
    table, document = session_view(spec, sid, rows)
    if args.json:
        print_json(document)
        return
    headers = ["KEY", "VALUE"] if spec is None else ["KEY", "VALUE", "STATUS"]
    if not rows:
        print(f"session {sid!r} has no stored metadata")
    print_table(headers, table)


async def _show(args: argparse.Namespace) -> int:
    path = _model_path(args)
    model = load_model(path) if path is not None else None
    sid = check_session_id(args.session_id)
    async with _open(args, model or _NoModel) as store:
        await _print_session(args, store, store.spec if model is not None else None, sid)
    return 0


async def _set(args: argparse.Namespace) -> int:
    model = _require_model(args)
    spec = ModelSpec(model)
    sid = check_session_id(args.session_id)
    values = parse_assignments(spec, args.assignments)
    try:
        # Everything is validated and encoded before the database is touched.
        encode_model(spec, spec.validate_values(values, session_id=sid))
    except ValidationError as exc:
        raise UsageError(f"session {sid!r}: {describe_validation_error(exc)}") from None
    async with _open(args, model) as store:
        await store.bind(sid).set_metadata(values)
        await _print_session(args, store, store.spec, sid)
    return 0


async def _delete(args: argparse.Namespace) -> int:
    model = _require_model(args)
    spec = ModelSpec(model)
    sid = check_session_id(args.session_id)
    keys = spec.resolve_keys(args.keys, session_id=sid) if args.keys else None
    async with _open(args, model) as store:
        await store.bind(sid).delete_metadata(keys)
    if args.json:
        print_json({"session_id": sid, "deleted": "all" if keys is None else keys})
    elif keys is None:
        print(f"deleted every key of session {sid!r}")
    else:
        print(f"deleted {', '.join(keys)} of session {sid!r}")
    return 0


async def _find(args: argparse.Namespace) -> int:
    model = _require_model(args)
    spec = ModelSpec(model)
    conditions = [parse_clause(spec, argument) for argument in args.conditions]
    # The limit and cursor are the query API's to check, before the database is opened.
    plan_query(spec, conditions, cursor=args.cursor)
    check_limit(args.limit)
    async with _open(args, model) as store:
        found = await store.find_sessions(*conditions, limit=args.limit, cursor=args.cursor)
    if args.json:
        print_json({"sessions": list(found), "limit": args.limit, "next_cursor": found.next_cursor})
    else:
        print_table(["SESSION_ID"], [[sid] for sid in found])
        print(f"{len(found)} session{'s' if len(found) != 1 else ''}")
        if found.next_cursor is not None:
            print(f"more: --cursor {found.next_cursor}")
    return 0


async def _check(args: argparse.Namespace) -> int:
    model = _require_model(args)
    if args.batch_size < 1 or args.max_examples < 0:
        raise UsageError("--batch-size must be at least 1 and --max-examples at least 0")
    async with _open(args, model) as store:
        bar: ProgressBar | None = None
        if not args.no_progress and sys.stderr.isatty():
            bar = ProgressBar(await count_stored_rows(store), sys.stderr)
        try:
            report = await check_store(
                store, batch_size=args.batch_size, max_examples=args.max_examples, progress=bar
            )
        finally:
            if bar is not None:
                bar.close()
    failed = not report.ok or (args.strict and bool(report.undeclared))
    if args.json:
        print_json({**report.to_json(), "ok": not failed})
        return 1 if failed else 0
    print_check_report(report, strict=args.strict, failed=failed)
    return 1 if failed else 0


async def _rehash(args: argparse.Namespace) -> int:
    model = _require_model(args)
    async with _open(args, model) as store:
        fixed = await rehash_store(store, batch_size=args.batch_size)
    if args.json:
        print_json({"rehashed": fixed})
    else:
        print(f"recomputed {fixed:,} equality hash{'es' if fixed != 1 else ''}")
    return 0


async def _ddl(args: argparse.Namespace) -> int:
    tables = build_tables(args.sessions_table, args.metadata_table)
    sys.stdout.write(create_ddl(tables, args.dialect))
    return 0


async def _schema(args: argparse.Namespace) -> int:
    print_json(_require_model(args).model_json_schema(by_alias=True))
    return 0


async def _demo(args: argparse.Namespace) -> int:
    from sessionmeta.demo import SAMPLE_SESSIONS, SupportTicket

    async with _open(args, SupportTicket, create=True) as store:
        await store.create_tables()
        for sid, values in SAMPLE_SESSIONS.items():
            await store.bind(sid).set_metadata(values)
        read = {sid: await store.bind(sid).get_metadata() for sid in SAMPLE_SESSIONS}
    if args.json:
        print_json(
            {
                "url": _shown(_url(args)),
                "model": "sessionmeta.demo:SupportTicket",
                "sessions": {sid: meta.model_dump(mode="json") for sid, meta in read.items()},
            }
        )
        return 0
    print(f"wrote {len(read)} sample sessions to {_shown(_url(args))}\n")
    print_table(
        ["SESSION_ID", "OWNER_ID", "STATUS", "PRIORITY", "TAGS", "TITLE"],
        [
            [sid, meta.owner_id, meta.status, meta.priority, ",".join(meta.tags or []), meta.title]
            for sid, meta in read.items()
        ],
    )
    print(
        "\nnext: export SESSIONMETA_MODEL=sessionmeta.demo:SupportTicket; sessionmeta show demo-1"
    )
    return 0


# ---- the parser ----------------------------------------------------------------------


def _add_common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes, before or after the command's name.

    The top-level parser holds the defaults; the commands' copies default to
    "not given", so ``sessionmeta --url X show S`` and ``sessionmeta show S --url X``
    both work and neither overrides the other with a default.
    """

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("database and model")
    group.add_argument(
        "--url",
        default=default(None),
        help="SQLAlchemy URL (postgresql://, mysql://, sqlite:///FILE; async drivers implied); "
        f"default $SESSIONMETA_URL, else {DEFAULT_URL}",
    )
    group.add_argument(
        "--model",
        default=default(None),
        metavar="PACKAGE.MODULE:CLASS",
        help="the SessionMeta model (default $SESSIONMETA_MODEL)",
    )
    group.add_argument(
        "--connect-timeout",
        type=float,
        default=default(5.0),
        metavar="SECONDS",
        help="give up on a database that does not answer (default 5)",
    )
    group.add_argument(
        "--sessions-table", default=default("agent_sessions"), help="(default agent_sessions)"
    )
    group.add_argument(
        "--metadata-table",
        default=default("agent_sessions_metadata"),
        help="(default agent_sessions_metadata)",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON for scripts"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sessionmeta",
        description="Look inside and change the typed metadata of agent sessions.",
        epilog="Exit codes: 0 done, 1 `check` found values that would not read, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"sessionmeta {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_common_options(parser, top=True)

    def add(name: str, handler: Handler, help: str) -> Any:
        command = commands.add_parser(name, help=help, description=help)
        _add_common_options(command, top=False)
        command.set_defaults(handler=handler)
        return command

    add("init", _init, "create the metadata table (and the sessions table if missing)")
    show = add("show", _show, "show the stored metadata of one session")
    show.add_argument("session_id", metavar="SESSION_ID")
    set_ = add("set", _set, "set keys of one session, each value validated by the model")
    set_.add_argument("session_id", metavar="SESSION_ID")
    set_.add_argument(
        "assignments",
        nargs="+",
        metavar="KEY=VALUE",
        help='VALUE is read as JSON when it fits the field (3, true, ["a","b"]), else as text',
    )
    delete = add("delete", _delete, "delete keys of one session (all keys when none given)")
    delete.add_argument("session_id", metavar="SESSION_ID")
    delete.add_argument("keys", nargs="*", metavar="KEY")
    find = add("find", _find, "find sessions by their metadata")
    find.add_argument(
        "conditions",
        nargs="+",
        metavar="CONDITION",
        help="key=v, key!=v, key>v, key>=v, key<v, key<=v, key~v (contains), key? (exists), "
        "!key (missing), key:OP=v (OP: eq ne in not_in gt ge lt le contains)",
    )
    find.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    find.add_argument("--cursor", help="continue after the page that printed this cursor")
    check = add(
        "check",
        _check,
        "check every stored row against the model; exit 1 if any would not read",
    )
    check.add_argument(
        "--strict", action="store_true", help="also fail on stored keys the model does not declare"
    )
    check.add_argument("--batch-size", type=int, default=5000, help="rows per read (default 5000)")
    check.add_argument(
        "--max-examples",
        type=int,
        default=100,
        help="list at most this many failing values (all are counted)",
    )
    check.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    rehash = add(
        "rehash",
        _rehash,
        "recompute the equality hashes an older sessionmeta made (see `check`)",
    )
    rehash.add_argument("--batch-size", type=int, default=5000, help="rows per read (default 5000)")
    ddl = add("ddl", _ddl, "print the CREATE statements for a database")
    ddl.add_argument("--dialect", required=True, choices=[backend.name for backend in BACKENDS])
    add("schema", _schema, "print the model's JSON Schema")
    add(
        "demo",
        _demo,
        "write sample sessions (model sessionmeta.demo:SupportTicket) and show them",
    )
    return parser


def _fail(message: str) -> int:
    sys.stderr.write(f"sessionmeta: error: {message}\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return asyncio.run(handler(args))
    except ValidationError as exc:
        return _fail(describe_validation_error(exc))
    except SessionMetaError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: stop quietly, as other tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
