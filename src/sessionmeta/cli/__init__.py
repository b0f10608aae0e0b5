"""The ``sessionmeta`` command: look inside and change session metadata from a shell.

Exit codes: 0 done; 1 ``check`` found stored values the model would refuse;
2 bad input or an unusable database, reported as one line on stderr with
nothing written.

This module builds the parser from the standard library alone; a command's own
module (``commands`` for those that open a database, ``offline`` for ``ddl`` and
``schema``) is imported only when that command runs, so ``--help`` and ``ddl``
start without Pydantic, the store or SQLAlchemy's asyncio layer.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from sessionmeta import __version__
from sessionmeta.errors import SessionMetaError

__all__ = ["DEFAULT_URL", "build_parser", "main"]

DEFAULT_URL = "sqlite+aiosqlite:///sessionmeta.sqlite3"
# The databases `ddl --dialect` knows (sql/dialects.py's backends, checked by a test);
# written out so that the parser is built without importing SQLAlchemy.
DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite")

Handler = Callable[[argparse.Namespace], int | Coroutine[Any, Any, int]]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other refusal of this command.
        self.exit(2, f"sessionmeta: error: {message} (see {self.prog} --help)\n")


# ---- options shared by the commands -------------------------------------------------

# Which of the shared options each command reads; its --help lists only those.
DATABASE = ("url", "tables", "json")
EVERYTHING = ("url", "model", "tables", "json", "keys")


def _add_common_options(
    parser: argparse.ArgumentParser, options: Sequence[str], *, top: bool
) -> None:
    """The shared options a command takes, before or after the command's name.

    The top-level parser holds every one with its default; the commands' copies
    default to "not given", so ``sessionmeta --url X show S`` and
    ``sessionmeta show S --url X`` both work and neither overrides the other.
    """

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group(
        "common options" if top else "common options (also accepted before the command)"
    )
    if "url" in options:
        group.add_argument(
            "--url",
            default=default(None),
            help="SQLAlchemy URL (postgresql://, mysql://, sqlite:///FILE; async drivers "
            f"implied); default $SESSIONMETA_URL, else {DEFAULT_URL}",
        )
    if "model" in options:
        group.add_argument(
            "--model",
            default=default(None),
            metavar="PACKAGE.MODULE:CLASS",
            help="the SessionMeta model (default $SESSIONMETA_MODEL)",
        )
    if "url" in options:
        group.add_argument(
            "--connect-timeout",
            type=float,
            default=default(5.0),
            metavar="SECONDS",
            help="give up on a database that does not answer (default 5)",
        )
    if "tables" in options:
        group.add_argument(
            "--sessions-table", default=default("agent_sessions"), help="(default agent_sessions)"
        )
        group.add_argument(
            "--metadata-table",
            default=default("agent_sessions_metadata"),
            help="(default agent_sessions_metadata)",
        )
    if "keys" in options:
        group.add_argument(
            "--keys-file",
            default=default(None),
            metavar="FILE",
            help="the encryption keys of Encrypted() fields, a JSON file (default "
            "$SESSIONMETA_KEYS_FILE, else the JSON text in $SESSIONMETA_KEYS)",
        )
    if "json" in options:
        group.add_argument(
            "--json", action="store_true", default=default(False), help="print JSON for scripts"
        )


CONDITIONS_HELP = (
    "key=v, key!=v, key>v, key>=v, key<v, key<=v, key~v (contains), key? (exists), "
    "!key (missing), key:OP=v (OP: eq ne in not_in gt ge lt le contains)"
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, built without importing any command."""
    parser = _Parser(
        prog="sessionmeta",
        description="Look inside and change the typed metadata of agent sessions.",
        epilog="Exit codes: 0 done, 1 `check` found values that would not read, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"sessionmeta {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_common_options(parser, EVERYTHING, top=True)

    def add(name: str, handler: str, options: Sequence[str], help: str) -> Any:
        command = commands.add_parser(name, help=help, description=help)
        _add_common_options(command, options, top=False)
        command.set_defaults(handler=handler)
        return command

    add(
        "init",
        "commands:init",
        DATABASE,
        "create the metadata table (and the sessions table if missing)",
    )
    show = add("show", "commands:show", EVERYTHING, "show the stored metadata of one session")
    show.add_argument("session_id", metavar="SESSION_ID")
    set_ = add(
        "set",
        "commands:set_",
        EVERYTHING,
        "set keys of one session, each value validated by the model",
    )
    set_.add_argument("session_id", metavar="SESSION_ID")
    set_.add_argument(
        "assignments",
        nargs="+",
        metavar="KEY=VALUE",
        help='VALUE is read as JSON when it fits the field (3, true, ["a","b"]), else as text',
    )
    delete = add(
        "delete",
        "commands:delete",
        EVERYTHING,
        "delete keys of one session (all keys when none given)",
    )
    delete.add_argument("session_id", metavar="SESSION_ID")
    delete.add_argument("keys", nargs="*", metavar="KEY")
    find = add("find", "commands:find", EVERYTHING, "find sessions by their metadata")
    find.add_argument("conditions", nargs="+", metavar="CONDITION", help=CONDITIONS_HELP)
    find.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    find.add_argument("--cursor", help="continue after the page that printed this cursor")
    listing = add(
        "list",
        "commands:list_sessions",
        EVERYTHING,
        "list sessions with their metadata as columns, filtered, ordered and paged",
    )
    listing.add_argument(
        "--columns",
        "-c",
        action="append",
        metavar="KEY[,KEY...]",
        help="the metadata keys to show, in this order (default every field of the model)",
    )
    listing.add_argument(
        "--where",
        "-w",
        action="append",
        default=[],
        metavar="CONDITION",
        help=f"only sessions matching it; repeat for AND. {CONDITIONS_HELP}",
    )
    listing.add_argument(
        "--order-by",
        default="session_id",
        metavar="[-]KEY",
        help="session_id (default), created_at, updated_at or a metadata key; -KEY for descending",
    )
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--cursor", help="continue after the page that printed this cursor")
    check = add(
        "check",
        "commands:check",
        EVERYTHING,
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
    check.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (by default a bar on a terminal, else a line every 5 s)",
    )
    rehash = add(
        "rehash",
        "commands:rehash",
        EVERYTHING,
        "recompute the equality hashes an older sessionmeta made (see `check`)",
    )
    rehash.add_argument("--batch-size", type=int, default=5000, help="rows per read (default 5000)")
    rekey = add(
        "rekey",
        "commands:rekey",
        EVERYTHING,
        "re-encrypt Encrypted() fields under the current key of --keys-file, in batches",
    )
    rekey.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="rows per read, their rewrites one short transaction (default 500)",
    )
    sweep = add(
        "sweep",
        "sweep:sweep",
        DATABASE,
        "delete expired keys (they already read as missing), in short transactions",
    )
    sweep.add_argument(
        "--batch-size", type=int, default=1000, help="rows per transaction (default 1000)"
    )
    sweep.add_argument(
        "--max-batches", type=int, default=None, help="stop after this many (default: none left)"
    )
    sweep.add_argument(
        "--pause",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait between batches, to leave the database to others (default 0)",
    )
    ddl = add("ddl", "offline:ddl", ("tables",), "print the CREATE statements for a database")
    ddl.add_argument("--dialect", required=True, choices=DIALECTS)
    ddl.add_argument(
        "--if-not-exists",
        action="store_true",
        help="CREATE ... IF NOT EXISTS: the script can run again, and on a database "
        "that has some of the tables",
    )
    ddl.add_argument(
        "--only-metadata",
        action="store_true",
        help="only the tables sessionmeta adds, not the sessions table the Agents SDK "
        "already creates",
    )
    serve = add(
        "serve",
        "serve:serve",
        ("url", "model", "tables", "keys"),
        "serve admin pages to browse, search and edit the sessions' metadata (web extra)",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1, this machine only; any other "
        "needs --token)",
    )
    serve.add_argument("--port", type=int, default=8765, help="(default 8765)")
    serve.add_argument(
        "--token",
        help="every request must carry it (open /?token=TOKEN once, or send "
        "Authorization: Bearer TOKEN); default $SESSIONMETA_TOKEN",
    )
    serve.add_argument(
        "--read-only", action="store_true", help="hide every form that writes, refuse every write"
    )
    serve.add_argument(
        "--messages-table",
        default="agent_messages",
        help="the Agents SDK's messages table, shown on a session's page when present "
        "(default agent_messages)",
    )
    add("schema", "offline:schema", ("model",), "print the model's JSON Schema")
    add(
        "demo",
        "commands:demo",
        DATABASE,
        "write sample sessions (model sessionmeta.demo:SupportTicket) and show them",
    )
    return parser


def _fail(message: str) -> int:
    sys.stderr.write(f"sessionmeta: error: {message}\n")
    return 2


def _handler(target: str) -> Handler:
    module, _, name = target.partition(":")
    found: Handler = getattr(importlib.import_module(f"sessionmeta.cli.{module}"), name)
    return found


def _descending_orders_attached(argv: Sequence[str]) -> list[str]:
    """``--order-by -KEY`` as ``--order-by=-KEY``: argparse takes a value that starts
    with ``-`` for an option of its own and would refuse the descending order."""
    attached: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--order-by":
            value = next(tokens, None)
            if value is not None and value.startswith("-") and value != "--":
                attached.append(f"--order-by={value}")
                continue
            attached.append(token)
            if value is not None:
                attached.append(value)
            continue
        attached.append(token)
    return attached


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    given = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_descending_orders_attached(given))
    try:
        outcome = _handler(args.handler)(args)
        if isinstance(outcome, int):
            return outcome
        import asyncio

        return asyncio.run(outcome)
    except SessionMetaError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: stop quietly, as other tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except Exception as exc:
        # Only a command that imported Pydantic can raise its ValidationError.
        from pydantic import ValidationError

        from sessionmeta.cli.input import describe_validation_error

        if isinstance(exc, ValidationError):
            return _fail(describe_validation_error(exc))
        raise
