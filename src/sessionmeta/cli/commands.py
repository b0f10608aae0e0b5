"""The commands that open a database: init, show, set, delete, find, list, check, rehash,
rekey, demo.

Imported only when one of them runs (``sessionmeta --help`` and ``ddl`` never
import the store). Each takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import URL

from sessionmeta.cli import DEFAULT_URL
from sessionmeta.cli.input import (
    UsageError,
    describe_validation_error,
    load_model,
    model_path,
    parse_assignments,
    parse_clause,
    parse_url,
    require_model,
)
from sessionmeta.cli.output import (
    ProgressBar,
    ProgressLog,
    cell_text,
    print_check_report,
    print_json,
    print_table,
    session_view,
)
from sessionmeta.core.codec import encode_model
from sessionmeta.core.encryption import EncryptionKeys
from sessionmeta.core.plan import check_limit, plan_query
from sessionmeta.core.spec import ModelSpec, SessionMeta, check_session_id
from sessionmeta.errors import DatabaseError, InvalidArgumentError
from sessionmeta.io.check import (
    check_store,
    count_stored_rows,
    read_session_rows,
    rehash_store,
)
from sessionmeta.io.database import describe
from sessionmeta.io.operations import OnInvalid
from sessionmeta.io.store import MetadataStore
from sessionmeta.sql.dialects import backend_named

__all__ = [
    "check",
    "delete",
    "demo",
    "find",
    "init",
    "list_sessions",
    "open_store",
    "rehash",
    "rekey",
    "set_",
    "show",
]


class _NoModel(SessionMeta):
    """Stands in where a command needs no model: every stored key is undeclared."""


# ---- options shared by the commands -------------------------------------------------


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


def _keys(args: argparse.Namespace) -> EncryptionKeys | None:
    """The keys of --keys-file, $SESSIONMETA_KEYS_FILE or $SESSIONMETA_KEYS (JSON text)."""
    path = getattr(args, "keys_file", None) or os.environ.get("SESSIONMETA_KEYS_FILE")
    text = None if path else os.environ.get("SESSIONMETA_KEYS")
    try:
        if path:
            return EncryptionKeys.from_file(path)
        return EncryptionKeys.from_json(text) if text else None
    except OSError as exc:
        raise UsageError(f"cannot read the keys file {path!r}: {exc.strerror}") from None
    except InvalidArgumentError as exc:
        where = f"keys file {path!r}" if path else "$SESSIONMETA_KEYS"
        raise UsageError(f"{where}: {exc}") from None


def _spec(args: argparse.Namespace, model: type[SessionMeta]) -> ModelSpec[Any]:
    """The model checked for storage, with the command line's keys for its encrypted fields."""
    return ModelSpec(model, keys=_keys(args) if ModelSpec(model).encrypted else None)


async def _has_table(store: MetadataStore[Any], name: str) -> bool:
    return await store.db.has_table(name)


@asynccontextmanager
async def open_store(
    args: argparse.Namespace,
    model: type[SessionMeta],
    *,
    create: bool = False,
    on_invalid: OnInvalid = "raise",
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
            on_invalid=on_invalid,
            keys=_keys(args) if ModelSpec(model).encrypted else None,
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


async def init(args: argparse.Namespace) -> int:
    """``init``: create the tables (the sessions table only when missing)."""
    async with open_store(args, _NoModel, create=True) as store:
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


async def show(args: argparse.Namespace) -> int:
    """``show``: one session's stored keys, with the model's defaults for the others."""
    path = model_path(args)
    model = load_model(path) if path is not None else None
    sid = check_session_id(args.session_id)
    async with open_store(args, model or _NoModel) as store:
        await _print_session(args, store, store.spec if model is not None else None, sid)
    return 0


async def set_(args: argparse.Namespace) -> int:
    """``set``: write keys of one session, all validated before anything is written."""
    model = require_model(args)
    spec = _spec(args, model)
    sid = check_session_id(args.session_id)
    values = parse_assignments(spec, args.assignments)
    try:
        # Everything is validated and encoded before the database is touched.
        encode_model(spec, spec.validate_values(values, session_id=sid))
    except ValidationError as exc:
        raise UsageError(f"session {sid!r}: {describe_validation_error(exc)}") from None
    async with open_store(args, model) as store:
        await store.bind(sid).set_metadata(values)
        await _print_session(args, store, store.spec, sid)
    return 0


async def delete(args: argparse.Namespace) -> int:
    """``delete``: the named keys of one session, or all of them."""
    model = require_model(args)
    spec = _spec(args, model)
    sid = check_session_id(args.session_id)
    keys = spec.resolve_keys(args.keys, session_id=sid) if args.keys else None
    async with open_store(args, model) as store:
        await store.bind(sid).delete_metadata(keys)
    if args.json:
        print_json({"session_id": sid, "deleted": "all" if keys is None else keys})
    elif keys is None:
        print(f"deleted every key of session {sid!r}")
    else:
        print(f"deleted {', '.join(keys)} of session {sid!r}")
    return 0


async def find(args: argparse.Namespace) -> int:
    """``find``: the ids of the sessions matching every condition."""
    model = require_model(args)
    spec = _spec(args, model)
    conditions = [parse_clause(spec, argument) for argument in args.conditions]
    # The limit and cursor are the query API's to check, before the database is opened.
    plan_query(spec, conditions, cursor=args.cursor)
    check_limit(args.limit)
    async with open_store(args, model) as store:
        found = await store.find_sessions(*conditions, limit=args.limit, cursor=args.cursor)
    if args.json:
        print_json({"sessions": list(found), "limit": args.limit, "next_cursor": found.next_cursor})
    else:
        print_table(["SESSION_ID"], [[sid] for sid in found])
        print(f"{len(found)} session{'s' if len(found) != 1 else ''}")
        if found.next_cursor is not None:
            print(f"more: --cursor {found.next_cursor}")
    return 0


async def list_sessions(args: argparse.Namespace) -> int:
    """``list``: sessions with chosen keys as columns, filtered, ordered and paged."""
    model = require_model(args)
    spec = _spec(args, model)
    columns = _columns(spec, args.columns)
    conditions = [parse_clause(spec, argument) for argument in args.where]
    # The order, limit and cursor are the query API's to check, before the database opens.
    plan_query(spec, conditions, order_by=args.order_by, cursor=args.cursor)
    check_limit(args.limit)
    async with open_store(args, model) as store:
        page = await store.list_sessions(
            *conditions, order_by=args.order_by, limit=args.limit, cursor=args.cursor
        )
    rows = [
        (item.session_id, item.metadata.model_dump(mode="json", by_alias=True)) for item in page
    ]
    if args.json:
        print_json(
            {
                "sessions": [
                    {"session_id": sid, "metadata": {key: dumped.get(key) for key in columns}}
                    for sid, dumped in rows
                ],
                "order_by": args.order_by,
                "limit": args.limit,
                "next_cursor": page.next_cursor,
            }
        )
        return 0
    print_table(
        ["SESSION_ID", *(key.upper() for key in columns)],
        [[sid, *(cell_text(dumped.get(key)) for key in columns)] for sid, dumped in rows],
    )
    print(f"{len(page)} session{'s' if len(page) != 1 else ''}")
    if page.next_cursor is not None:
        print(f"more: --cursor {page.next_cursor}")
    return 0


def _columns(spec: ModelSpec[Any], arguments: list[str] | None) -> list[str]:
    """The storage keys ``--columns`` names (comma-separated, repeatable), else every field."""
    if not arguments:
        return list(spec.fields)
    names = [name.strip() for argument in arguments for name in argument.split(",")]
    if not all(names):
        raise UsageError(f"--columns {','.join(arguments)!r} names an empty column")
    return spec.resolve_keys(names) or []


async def check(args: argparse.Namespace) -> int:
    """``check``: read every stored row with the model; 1 when any would not read."""
    model = require_model(args)
    if args.batch_size < 1 or args.max_examples < 0:
        raise UsageError("--batch-size must be at least 1 and --max-examples at least 0")
    async with open_store(args, model) as store:
        progress: ProgressBar | ProgressLog | None = None
        if not args.no_progress:
            total = await count_stored_rows(store)
            # A bar redrawn in place on a terminal; elsewhere (a CI log, `2>file`) a line
            # now and then, so a long check is visibly alive without flooding the log.
            kind = ProgressBar if sys.stderr.isatty() else ProgressLog
            progress = kind(total, sys.stderr)
        try:
            report = await check_store(
                store, batch_size=args.batch_size, max_examples=args.max_examples, progress=progress
            )
        finally:
            if progress is not None:
                progress.close()
    failed = not report.ok or (args.strict and bool(report.undeclared))
    if args.json:
        print_json({**report.to_json(), "ok": not failed})
        return 1 if failed else 0
    print_check_report(report, strict=args.strict, failed=failed)
    return 1 if failed else 0


async def rehash(args: argparse.Namespace) -> int:
    """``rehash``: recompute the equality hashes an older version made."""
    model = require_model(args)
    async with open_store(args, model) as store:
        fixed = await rehash_store(store, batch_size=args.batch_size)
    if args.json:
        print_json({"rehashed": fixed})
    else:
        print(f"recomputed {fixed:,} equality hash{'es' if fixed != 1 else ''}")
    return 0


async def rekey(args: argparse.Namespace) -> int:
    """``rekey``: re-encrypt encrypted values under the current key; 1 if any did not read."""
    model = require_model(args)
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    async with open_store(args, model) as store:
        report = await store.rekey(batch_size=args.batch_size)
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "rows": report.rows,
                "rewritten": report.rewritten,
                "unreadable_total": report.unreadable_total,
                "unreadable": [
                    {"session_id": item.session_id, "key": item.key, "reason": item.reason}
                    for item in report.unreadable
                ],
            }
        )
        return 0 if report.ok else 1
    print(f"read {report.rows:,} rows; re-encrypted {report.rewritten:,}")
    for item in report.unreadable:
        print(f"session {item.session_id!r}, key {item.key!r}: {item.reason}")
    if not report.ok:
        print(f"{report.unreadable_total:,} values could not be read and were left as they are")
    return 0 if report.ok else 1


async def demo(args: argparse.Namespace) -> int:
    """``demo``: write the sample sessions of :mod:`sessionmeta.demo` and show them."""
    from sessionmeta.demo import SAMPLE_SESSIONS, SupportTicket

    async with open_store(args, SupportTicket, create=True) as store:
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
