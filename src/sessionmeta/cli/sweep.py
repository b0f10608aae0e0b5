"""``sessionmeta sweep``: delete expired keys, a bounded batch per transaction."""

from __future__ import annotations

import argparse

from sessionmeta.cli.commands import open_store
from sessionmeta.cli.input import UsageError
from sessionmeta.cli.output import print_json
from sessionmeta.core.spec import SessionMeta

__all__ = ["sweep"]


class _AnyKeys(SessionMeta):
    """Sweeping reads no value: any model will do."""


async def sweep(args: argparse.Namespace) -> int:
    """``sweep``: delete every expired key's rows, ``--batch-size`` rows per transaction."""
    if not 1 <= args.batch_size <= 10_000:
        raise UsageError(f"--batch-size must be from 1 to 10000, not {args.batch_size}")
    if args.max_batches is not None and args.max_batches < 1:
        raise UsageError(f"--max-batches must be positive, not {args.max_batches}")
    if not 0 <= args.pause <= 60:
        raise UsageError(f"--pause must be from 0 to 60 seconds, not {args.pause:g}")
    async with open_store(args, _AnyKeys) as store:
        result = await store.sweep(
            batch_size=args.batch_size, max_batches=args.max_batches, pause=args.pause
        )
    if args.json:
        print_json({"deleted_rows": result.rows, "batches": result.batches})
    else:
        rows = f"{result.rows:,} expired row{'s' if result.rows != 1 else ''}"
        print(f"deleted {rows} in {result.batches:,} batch{'es' if result.batches != 1 else ''}")
    return 0
