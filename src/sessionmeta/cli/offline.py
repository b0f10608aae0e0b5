"""The commands that open no database: ``ddl`` and ``schema``.

``ddl`` imports SQLAlchemy's core and the table definitions only, so it starts
in a fraction of the time the database commands take.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["ddl", "schema"]


def ddl(args: argparse.Namespace) -> int:
    """``ddl``: the ``CREATE`` statements of the tables for one kind of database."""
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
