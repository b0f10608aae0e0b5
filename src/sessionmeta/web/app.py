"""The admin pages: list, session, edit, check. Server-rendered, no script.

Every read and write goes through the store's public API (``list_sessions``,
``set_metadata(..., expected_version=...)``, ``delete_metadata``, ``check_store``), so
what the pages accept is exactly what the API accepts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from sessionmeta.core.spec import check_session_id
from sessionmeta.errors import (
    ConflictError,
    InvalidArgumentError,
    SessionMetaError,
    SessionNotFoundError,
    UniqueValueError,
)
from sessionmeta.io.store import MetadataStore
from sessionmeta.web.checks import CheckRunner
from sessionmeta.web.forms import (
    FormField,
    conditions_from_query,
    filter_rows,
    form_fields,
    input_text,
    order_argument,
    orders,
    same_text,
    value_from_input,
)
from sessionmeta.web.reads import SessionView, read_messages, read_session
from sessionmeta.web.security import Csrf, Guard

__all__ = ["create_app"]

# A form is a few fields: anything much larger is not one of ours.
MAX_FORM_BYTES = 4 * 1024 * 1024
DEFAULT_COLUMNS = 6


class _Refused(Exception):
    """A request the pages answer with an error page: status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _cell(value: Any) -> str:
    import json

    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ", ".join(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _link(path: str, params: Mapping[str, Any] | list[tuple[str, Any]] | None = None) -> str:
    items = params.items() if isinstance(params, Mapping) else (params or [])
    kept = [(name, value) for name, value in items if value is not None and value != ""]
    return path + (f"?{urlencode(kept)}" if kept else "")


class AdminPages:
    """The pages of one store; :func:`create_app` serves them."""

    def __init__(
        self,
        store: MetadataStore[Any],
        *,
        read_only: bool,
        messages_table: str | None,
    ) -> None:
        self.store = store
        self.read_only = read_only
        self.messages_table = messages_table
        self.fields: list[FormField] = form_fields(store.spec)
        self.by_key = {field.key: field for field in self.fields}
        self.orders = orders(self.fields)
        self.csrf = Csrf()
        self.checks = CheckRunner(store)
        self._has_messages: bool | None = None
        self.templates = Environment(
            loader=PackageLoader("sessionmeta.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(link=_link, cell=_cell)
        self.stylesheet = (files("sessionmeta.web") / "static" / "style.css").read_bytes()

    # ---- plumbing ---------------------------------------------------------------------

    def _render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        cookie = request.scope.get("state", {}).get("csrf_cookie") or ""
        html = self.templates.get_template(template).render(
            model_name=self.store.spec.name,
            read_only=self.read_only,
            csrf=self.csrf.token_for(cookie),
            **context,
        )
        return HTMLResponse(html, status_code=status)

    async def _form(self, request: Request) -> dict[str, str]:
        """The posted form (URL-encoded), after the CSRF check."""
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise _Refused(413, "the form is too large")
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        sent = request.scope.get("state", {}).get("csrf_sent_cookie")
        if not self.csrf.valid(sent, form.get("csrf")):
            raise _Refused(403, "the form's CSRF token is missing or wrong: reload the page")
        return form

    def _refuse_writes(self) -> None:
        if self.read_only:
            raise _Refused(403, "this server is read-only (--read-only): nothing can be changed")

    @staticmethod
    def _session_id(value: str | None) -> str:
        if value is None:
            raise _Refused(400, "no session id given (?id=...)")
        try:
            return check_session_id(value)
        except InvalidArgumentError as exc:
            raise _Refused(400, str(exc)) from None

    async def has_messages(self) -> bool:
        if self.messages_table is None:
            return False
        if self._has_messages is None:
            self._has_messages = await self.store.db.has_table(self.messages_table)
        return self._has_messages

    # ---- list -------------------------------------------------------------------------

    async def list_page(self, request: Request) -> Response:
        started = time.perf_counter()
        query = request.query_params
        rows = filter_rows(self.fields, query)
        columns = [key for key in query.getlist("c") if key in self.by_key]
        if not columns:
            columns = [field.key for field in self.fields[:DEFAULT_COLUMNS]]
        order = query.get("order") or "session_id"
        cursor = query.get("cursor") or None
        error = None
        page: list[Any] = []
        next_cursor = None
        try:
            limit = int(query.get("limit") or 50)
        except ValueError:
            limit = 50
            error = f"limit {query.get('limit')!r} is not a number"
        if order not in dict(self.orders):
            error, order = f"no such order {order!r}", "session_id"
        if error is None:
            try:
                found = await self.store.list_sessions(
                    *conditions_from_query(rows),
                    order_by=order_argument(order),
                    limit=limit,
                    cursor=cursor,
                )
                page, next_cursor = list(found), found.next_cursor
            except ValidationError as exc:
                error = "; ".join(
                    f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
                    for item in exc.errors()
                )
            except (InvalidArgumentError, SessionMetaError) as exc:
                error = str(exc)
        sessions = []
        for item in page:
            model = item.metadata
            stored = {self.store.spec.field(name).key for name in model.model_fields_set}
            dumped = model.model_dump(mode="json", by_alias=True)
            sessions.append(
                (item.session_id, [dumped.get(key) if key in stored else None for key in columns])
            )
        kept = [(name, value) for name, value in query.multi_items() if name != "cursor"]
        response = self._render(
            request,
            "list.html",
            status=400 if error else 200,
            fields=self.fields,
            filters=rows,
            columns=columns,
            order=order,
            orders=self.orders,
            limit=limit,
            sessions=sessions,
            error=error,
            first_page=_link("/", kept) if cursor else None,
            next_page=_link("/", [*kept, ("cursor", next_cursor)]) if next_cursor else None,
        )
        response.headers["server-timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    # ---- one session ------------------------------------------------------------------

    async def session_page(self, request: Request) -> Response:
        session_id = self._session_id(request.query_params.get("id"))
        view = await read_session(self.store, self.fields, session_id)
        if not view.stored and not await self.store.exists(session_id):
            raise _Refused(404, f"no session {session_id!r}")
        messages = None
        if await self.has_messages():
            assert self.messages_table is not None
            messages = await read_messages(self.store, self.messages_table, session_id)
        return self._render(
            request,
            "session.html",
            view=view,
            messages=messages,
            notice=request.query_params.get("notice"),
        )

    def _edit_form(
        self,
        request: Request,
        view: SessionView,
        *,
        texts: Mapping[str, str] | None = None,
        was: Mapping[str, str] | None = None,
        version: str | None = None,
        errors: Mapping[str, str] | None = None,
        message: str | None = None,
        status: int = 200,
    ) -> Response:
        """The edit form: ``texts`` as typed (else the stored values), compared on save
        against ``was`` (else the stored values) under ``version`` (else the stored one)."""
        rows = []
        for row in view.fields:
            key = row.field.key
            stored = input_text(row.field, row.stored_text)
            rows.append(
                {
                    "field": row.field,
                    "text": texts[key] if texts is not None and key in texts else stored,
                    "was": was[key] if was is not None and key in was else stored,
                    "stored_error": row.error,
                    "error": (errors or {}).get(key),
                }
            )
        return self._render(
            request,
            "edit.html",
            status=status,
            view=view,
            version=view.version if version is None else version,
            rows=rows,
            message=message,
            general_error=(errors or {}).get("*") or view.model_error,
        )

    async def edit_page(self, request: Request) -> Response:
        self._refuse_writes()
        session_id = self._session_id(request.query_params.get("id"))
        view = await read_session(self.store, self.fields, session_id)
        if not view.stored and not await self.store.exists(session_id):
            raise _Refused(404, f"no session {session_id!r}")
        return self._edit_form(request, view)

    async def edit_submit(self, request: Request) -> Response:
        self._refuse_writes()
        form = await self._form(request)
        session_id = self._session_id(form.get("id"))
        submitted = {field.key: form.get(f"v:{field.key}", "") for field in self.fields}
        changed = {
            field.key: value_from_input(field, submitted[field.key])
            for field in self.fields
            if not same_text(submitted[field.key], form.get(f"was:{field.key}", ""))
        }
        if not changed:
            return RedirectResponse(
                _link("/session", {"id": session_id, "notice": "nothing changed"}), 303
            )
        meta = self.store.bind(session_id)
        try:
            await meta.set_metadata(changed, expected_version=form.get("version"), create=False)
        except ValidationError as exc:
            return await self._submitted_again(
                request,
                session_id,
                form,
                submitted,
                self._errors_by_key(exc),
                "Nothing was saved: correct the fields marked below.",
                422,
            )
        except UniqueValueError as exc:
            # Not a change by someone else: the value is taken, so say so beside the field.
            return await self._submitted_again(
                request,
                session_id,
                form,
                submitted,
                {exc.key or "*": str(exc)},
                "Nothing was saved: a unique value is held by another session.",
                409,
            )
        except ConflictError:
            view = await read_session(self.store, self.fields, session_id)
            mine = {
                field.key: submitted[field.key] for field in self.fields if field.key in changed
            }
            return self._edit_form(
                request,
                view,
                texts=mine,
                message=(
                    "Not saved: this session changed since you opened the form. The form now "
                    "shows the stored values, with your changes kept: check them and save again."
                ),
                status=409,
            )
        except SessionNotFoundError:
            raise _Refused(404, f"session {session_id!r} was deleted meanwhile") from None
        return RedirectResponse(_link("/session", {"id": session_id, "notice": "saved"}), 303)

    async def _submitted_again(
        self,
        request: Request,
        session_id: str,
        form: Mapping[str, str],
        submitted: dict[str, str],
        errors: dict[str, str],
        message: str,
        status: int,
    ) -> Response:
        """The edit form shown again as submitted, with ``errors`` beside their fields, still
        compared against what the form first showed."""
        view = await read_session(self.store, self.fields, session_id)
        return self._edit_form(
            request,
            view,
            texts=submitted,
            was={field.key: form.get(f"was:{field.key}", "") for field in self.fields},
            version=form.get("version", ""),
            errors=errors,
            message=message,
            status=status,
        )

    def _errors_by_key(self, exc: ValidationError) -> dict[str, str]:
        errors: dict[str, list[str]] = {}
        for item in exc.errors():
            location = item["loc"]
            key = "*"
            if location and isinstance(location[0], str):
                try:
                    key = self.store.spec.field(location[0]).key
                except SessionMetaError:
                    key = "*"
            where = ".".join(str(part) for part in location[1:])
            errors.setdefault(key, []).append(f"{where + ': ' if where else ''}{item['msg']}")
        return {key: "; ".join(messages) for key, messages in errors.items()}

    async def delete_page(self, request: Request) -> Response:
        self._refuse_writes()
        session_id = self._session_id(request.query_params.get("id"))
        key = request.query_params.get("key") or None
        view = await read_session(self.store, self.fields, session_id)
        stored = None
        if key is not None:
            texts = {row.field.key: row.stored_text for row in view.fields}
            stored = {**texts, **dict(view.undeclared)}.get(key)
            if stored is None:
                raise _Refused(404, f"session {session_id!r} has no stored key {key!r}")
        return self._render(request, "delete.html", view=view, key=key, stored=stored)

    async def delete_submit(self, request: Request) -> Response:
        self._refuse_writes()
        form = await self._form(request)
        session_id = self._session_id(form.get("id"))
        key = form.get("key") or None
        try:
            await self.store.bind(session_id).delete_metadata(None if key is None else [key])
        except SessionMetaError as exc:
            raise _Refused(400, str(exc)) from None
        notice = f"deleted {key}" if key is not None else "deleted every key"
        return RedirectResponse(_link("/session", {"id": session_id, "notice": notice}), 303)

    # ---- check ------------------------------------------------------------------------

    async def check_page(self, request: Request) -> Response:
        return self._render(request, "check.html", job=self.checks.job)

    async def check_start(self, request: Request) -> Response:
        # A scan writes nothing: read-only servers run it too.
        await self._form(request)
        await self.checks.launch()
        return RedirectResponse("/check", 303)

    async def stylesheet_file(self, request: Request) -> Response:
        return Response(self.stylesheet, media_type="text/css")

    async def refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Refused)
        return self._render(request, "error.html", status=exc.status, message=exc.message)


def create_app(
    store: MetadataStore[Any],
    *,
    read_only: bool = False,
    token: str | None = None,
    allowed_hosts: list[str] | None = None,
    messages_table: str | None = "agent_messages",
) -> Starlette:
    """The admin pages of ``store`` as an ASGI application.

    ``read_only`` hides every form that writes and refuses every write with 403.
    With ``token`` every request must carry it (``Authorization: Bearer``, or the
    cookie a visit to ``/?token=...`` sets), else 401. ``allowed_hosts`` (names
    without port) refuses requests for any other ``Host``, against DNS rebinding;
    ``None`` takes any. ``messages_table`` is the Agents SDK's messages table, shown
    read-only on the session page when the database has it (``None``: never).
    The store is neither opened nor closed here.
    """
    pages = AdminPages(store, read_only=read_only, messages_table=messages_table)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await pages.checks.close()

    routes = [
        Route("/", pages.list_page, methods=["GET"]),
        Route("/session", pages.session_page, methods=["GET"]),
        Route("/session/edit", pages.edit_page, methods=["GET"]),
        Route("/session/edit", pages.edit_submit, methods=["POST"]),
        Route("/session/delete", pages.delete_page, methods=["GET"]),
        Route("/session/delete", pages.delete_submit, methods=["POST"]),
        Route("/check", pages.check_page, methods=["GET"]),
        Route("/check", pages.check_start, methods=["POST"]),
        Route("/static/style.css", pages.stylesheet_file, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token, allowed_hosts=allowed_hosts)],
        exception_handlers={_Refused: pages.refused},
        lifespan=lifespan,
    )
    app.state.pages = pages
    return app
