"""``sessionmeta serve``: the admin pages (``sessionmeta.web``) served by uvicorn.

Imported only when the command runs; Starlette, Jinja2 and uvicorn come with the
``web`` extra, which the refusal names when it is missing.
"""

from __future__ import annotations

import argparse
import os
import sys

from sessionmeta.cli.commands import open_store
from sessionmeta.cli.input import UsageError, require_model

__all__ = ["serve"]


async def serve(args: argparse.Namespace) -> int:
    """``serve``: the pages of the database's sessions, until interrupted."""
    try:
        import uvicorn

        from sessionmeta.web.app import create_app
        from sessionmeta.web.security import LOOPBACK_HOSTS, is_loopback
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"`sessionmeta serve` needs the web extra: pip install 'sessionmeta[web]' ({exc})"
        ) from None
    token = args.token or os.environ.get("SESSIONMETA_TOKEN") or None
    loopback = is_loopback(args.host)
    if not loopback and token is None:
        raise UsageError(
            f"--host {args.host} serves other machines: give --token (or set SESSIONMETA_TOKEN), "
            "which every request must then carry"
        )
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0 to 65535, not {args.port}")
    model = require_model(args)
    # A stored value the model no longer reads lists as its default; its page says why.
    async with open_store(args, model, on_invalid="default") as store:
        app = create_app(
            store,
            read_only=args.read_only,
            token=token,
            # On the loopback interface, only this machine's names: a page of another
            # site whose name resolves here (DNS rebinding) is refused.
            allowed_hosts=sorted({*LOOPBACK_HOSTS, args.host}) if loopback else None,
            messages_table=args.messages_table,
        )
        config = uvicorn.Config(
            app, host=args.host, port=args.port, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        host = f"[{args.host}]" if ":" in args.host else args.host
        mode = " (read-only)" if args.read_only else ""
        sys.stderr.write(
            f"serving {store.spec.name} sessions of {store.db.engine.url.render_as_string()}"
            f"{mode} at http://{host}:{args.port}/"
            f"{'?token=...' if token else ''}; Ctrl-C stops\n"
        )
        sys.stderr.flush()
        await server.serve()
    return 0
