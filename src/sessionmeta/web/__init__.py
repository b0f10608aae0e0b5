"""``sessionmeta serve``: admin pages to browse, search and edit session metadata.

Needs the ``web`` extra (``pip install 'sessionmeta[web]'``: Starlette, Jinja2, uvicorn).
:func:`create_app` makes the ASGI application of a store's pages; the command line
serves it with uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sessionmeta.web.app import create_app

__all__ = ["create_app"]


# Hidden from type checkers, which see the import above instead.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        if name != "create_app":
            raise AttributeError(f"module 'sessionmeta.web' has no attribute {name!r}")
        try:
            from sessionmeta.web.app import create_app
        except ModuleNotFoundError as exc:
            if exc.name in ("starlette", "jinja2"):
                raise ModuleNotFoundError(
                    f"sessionmeta.web needs the web extra: pip install 'sessionmeta[web]' ({exc})",
                    name=exc.name,
                ) from exc
            raise
        return create_app
