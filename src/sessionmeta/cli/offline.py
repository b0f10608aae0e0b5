"""The commands that open no database: ``ddl`` and ``schema``.

``ddl`` prints the default tables' statements from ``rendered_ddl.json`` (written with
``schemas/`` by scripts/write_schemas.py, and checked against the code by a test), so it
imports no SQLAlchemy; other table names take SQLAlchemy's core and the table
definitions only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["ddl", "schema"]


def ddl(args: argparse.Namespace) -> int:
    """``ddl``: the ``CREATE`` statements of the tables for one kind of database."""
    if (args.sessions_table, args.metadata_table) == ("agent_sessions", "agent_sessions_metadata"):
        options = [("if-not-exists", args.if_not_exists), ("only-metadata", args.only_metadata)]
        rendered = json.loads(Path(__file__).with_name("rendered_ddl.json").read_text())
        sys.stdout.write(rendered[args.dialect][",".join(name for name, on in options if on)])
        return 0
    from sessionmeta.sql.dialects import backend_named, create_ddl
    from sessionmeta.sql.schema import build_tables

    backend = backend_named(args.dialect)
    tables = build_tables(args.sessions_table, args.metadata_table)
    sys.stdout.write(
        create_ddl(
            tables,
            backend.name,
            if_not_exists=args.if_not_exists,
            only_metadata=args.only_metadata,
        )
    )
    return 0


def schema(args: argparse.Namespace) -> int:
    """``schema``: the model's JSON Schema, as its storage keys name the fields."""
    from sessionmeta.cli.input import require_model

    document = require_model(args).model_json_schema(by_alias=True)
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    return 0
