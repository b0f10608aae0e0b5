"""FastAPI integration: sessionmeta's errors as HTTP responses, and a scoped store per user.

Needs the ``fastapi`` extra: ``pip install 'sessionmeta[fastapi]'``.
:func:`add_exception_handlers` maps the errors a request can cause to status codes
(see :data:`STATUS_CODES`), each with a JSON body that names the error, the
session and key concerned where known, and what was wrong::

    {"error": "SessionNotFoundError", "detail": "session 'c1' does not exist; ...",
     "session_id": "c1", "key": null}

:func:`scoped_dependency` makes a dependency that gives each request the store's
view of the current user's sessions (``store.scoped(owner_id=user)``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import TracebackType
from typing import Any

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import JSONResponse
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without FastAPI
    raise ImportError(
        "sessionmeta.fastapi needs FastAPI; install it with "
        f"pip install 'sessionmeta[fastapi]' ({exc})"
    ) from exc

from pydantic import ValidationError

from sessionmeta.core.spec import ModelT
from sessionmeta.errors import (
    ConcurrencyError,
    ConflictError,
    FilterError,
    InvalidArgumentError,
    InvalidCursorError,
    SessionMetaError,
    SessionNotFoundError,
    SessionNotInScopeError,
    UnknownKeyError,
)
from sessionmeta.io.scoped import ScopedStore
from sessionmeta.io.store import MetadataStore

__all__ = ["STATUS_CODES", "add_exception_handlers", "scoped_dependency"]

#: The status code of each error :func:`add_exception_handlers` answers (subclasses
#: included: ``InvalidSessionIdError`` is an ``InvalidArgumentError``). Errors not
#: listed (a ``DatabaseError``, a ``StoredValueError``) stay server errors, 500.
STATUS_CODES: dict[type[Exception], int] = {
    ValidationError: 422,
    InvalidArgumentError: 422,
    UnknownKeyError: 422,
    FilterError: 400,
    InvalidCursorError: 400,
    SessionNotFoundError: 404,
    SessionNotInScopeError: 404,
    ConflictError: 409,
    ConcurrencyError: 409,
}


def add_exception_handlers(app: FastAPI) -> None:
    """Answer sessionmeta's errors on ``app`` with the status codes of :data:`STATUS_CODES`.

    422 for a value, key, session id or argument the request supplied and the
    store refused; 400 for a filter or cursor it cannot use; 404 for a session
    that is missing or outside the caller's scope; 409 for a write that met a
    concurrent change (a stale ``expected_version``, or a conflict every retry
    met). A :class:`pydantic.ValidationError` is answered only when it came out
    of a sessionmeta call; one raised by the application's own code stays a 500.
    """
    for error in STATUS_CODES:
        app.add_exception_handler(error, _handle)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    # The nearest listed class in the error's MRO decides, as it picked this handler.
    status = next(STATUS_CODES[cls] for cls in type(exc).__mro__ if cls in STATUS_CODES)
    if isinstance(exc, ValidationError):
        if not _raised_in_sessionmeta(exc.__traceback__):
            raise exc
        return JSONResponse(status_code=status, content=_validation_body(exc))
    assert isinstance(exc, SessionMetaError)
    body: dict[str, Any] = {
        "error": type(exc).__name__,
        "detail": str(exc),
        "session_id": exc.session_id,
        "key": exc.key,
    }
    if isinstance(exc, UnknownKeyError):
        body["keys"] = exc.keys
    return JSONResponse(status_code=status, content=body)


def _raised_in_sessionmeta(traceback: TracebackType | None) -> bool:
    """Whether the exception passed through sessionmeta's code on its way up (this
    module's own frames aside: a handler declining an error re-raises it here, and a
    handler further out sees that frame too)."""
    while traceback is not None:
        name = traceback.tb_frame.f_globals.get("__name__", "")
        if (
            isinstance(name, str)
            and (name == "sessionmeta" or name.startswith("sessionmeta."))
            and name != __name__
        ):
            return True
        traceback = traceback.tb_next
    return False


def _validation_body(exc: ValidationError) -> dict[str, Any]:
    # Pydantic's own JSON rendering: the context of an error may hold objects
    # (a validator's exception) that json.dumps would refuse.
    errors = json.loads(exc.json(include_url=False))
    keys = {str(error["loc"][0]) for error in errors if error.get("loc")}
    return {
        "error": "ValidationError",
        "detail": errors,
        "session_id": None,
        "key": keys.pop() if len(keys) == 1 else None,
        "model": exc.title,
    }


StoreSource = MetadataStore[ModelT] | Callable[[Request], MetadataStore[ModelT]]


def scoped_dependency(
    store: StoreSource[ModelT],
    current_user: Callable[..., Any],
    *,
    key: str = "owner_id",
) -> Callable[..., ScopedStore[ModelT]]:
    """A dependency giving each request ``store.scoped({key: current_user()})``.

    ``store`` is the application's store, or a function of the request that
    returns it (``lambda request: request.app.state.store``, for a store made at
    start-up). ``current_user`` is the application's own dependency for the
    authenticated user's id: it raises its ``401`` itself; its value is
    validated as the field ``key``::

        MyChats = Annotated[ScopedStore[ChatMeta], Depends(scoped_dependency(store, user_id))]

        @app.patch("/chats/{chat_id}")
        async def rename(chat_id: str, title: str, chats: MyChats) -> None:
            await chats.bind(chat_id).set_metadata({"title": title}, create=False)

    Another user's chat, or a missing one, is then a 404 (with
    :func:`add_exception_handlers`), and never created.
    """
    # FastAPI reads a dependency's own dependencies from its signature: the
    # user's is the caller's, so the function is made here, around it.
    the_user = Depends(current_user)

    def dependency(request: Request, user: Any = the_user) -> ScopedStore[ModelT]:
        found = store if isinstance(store, MetadataStore) else store(request)
        return found.scoped({key: user})

    return dependency
