"""What the session page reads: every stored row of a session checked against the model,
and the conversation the Agents SDK keeps beside it. Statements run on the store's seam.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, bindparam, select

from sessionmeta.core.sealing import open_row
from sessionmeta.core.versions import version_of
from sessionmeta.io.check import WHOLE_MODEL, read_session_rows, validate_session_rows
from sessionmeta.io.store import MetadataStore
from sessionmeta.sql.statements import CompiledStatement, compile_statement
from sessionmeta.web.forms import FormField

__all__ = ["FieldRow", "Message", "SessionView", "read_messages", "read_session"]

# A conversation longer than this shows its first messages and says how many it holds.
MAX_MESSAGES = 500


@dataclass(frozen=True)
class FieldRow:
    """One declared field of a session: its stored text (``None`` when not stored) and,
    when that no longer validates, why."""

    field: FormField
    stored_text: str | None
    error: str | None

    @property
    def shown(self) -> str:
        """The stored JSON, indented when it is an object or array."""
        if self.stored_text is None:
            return ""
        try:
            value = json.loads(self.stored_text)
        except ValueError:
            return self.stored_text
        if isinstance(value, (dict, list)):
            return json.dumps(value, indent=2, ensure_ascii=False)
        return self.stored_text


@dataclass(frozen=True)
class SessionView:
    """A session as stored: its declared fields, its undeclared keys, its version."""

    session_id: str
    fields: list[FieldRow]
    undeclared: list[tuple[str, str]]
    # A failure of the keys together (a model validator), not of any one key.
    model_error: str | None
    version: str

    @property
    def stored(self) -> bool:
        return any(row.stored_text is not None for row in self.fields) or bool(self.undeclared)


async def read_session(
    store: MetadataStore[Any], fields: list[FormField], session_id: str
) -> SessionView:
    """Every stored row of the session in one read, each declared value validated as a
    read would validate it (never raising for a stored value), and the session's version
    for a conditional write."""
    rows = await read_session_rows(store, session_id)
    spec = store.spec
    declared = [(key, value) for key, value in rows if key in spec.fields]
    checked = validate_session_rows(spec, session_id, declared)
    # Encrypted values are shown and edited decrypted (a value that does not decrypt is
    # shown as stored, beside its error).
    texts = {
        key: value if key in checked.invalid else open_row(spec, session_id, key, value)
        for key, value in declared
    }
    return SessionView(
        session_id=session_id,
        fields=[
            FieldRow(field, texts.get(field.key), checked.invalid.get(field.key))
            for field in fields
        ],
        undeclared=[(key, value) for key, value in rows if key not in spec.fields],
        model_error=checked.invalid.get(WHOLE_MODEL),
        version=version_of(spec, rows),
    )


@dataclass(frozen=True)
class Message:
    """One item of an Agents SDK conversation, as the page shows it."""

    role: str
    text: str
    created_at: Any


def _messages_statement(store: MetadataStore[Any], table_name: str) -> CompiledStatement:
    # The columns of the Agents SDK's SQLAlchemySession that the page reads.
    messages = Table(
        table_name,
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("session_id", String(255)),
        Column("message_data", Text),
        Column("created_at", DateTime),
    )
    query = (
        select(messages.c.message_data, messages.c.created_at)
        .where(messages.c.session_id == bindparam("session_id"))
        .order_by(messages.c.id)
        .limit(bindparam("limit"))
    )
    return compile_statement(query, store.engine.dialect)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part.get("text") or part.get("refusal") or json.dumps(part, ensure_ascii=False)
            if isinstance(part, dict)
            else str(part)
            for part in content
        ]
        return "\n".join(str(part) for part in parts)
    return json.dumps(content, ensure_ascii=False)


def describe_message(data: str) -> tuple[str, str]:
    """The role (or item type) and text of one stored SDK item."""
    try:
        item = json.loads(data)
    except ValueError:
        return "?", data
    if not isinstance(item, dict):
        return "?", data
    role = str(item.get("role") or item.get("type") or "item")
    if "content" in item:
        return role, _content_text(item["content"])
    if item.get("type") == "function_call":
        return role, f"{item.get('name')}({item.get('arguments', '')})"
    if "output" in item:
        return role, _content_text(item["output"])
    return role, json.dumps(item, ensure_ascii=False)


async def read_messages(
    store: MetadataStore[Any], table_name: str, session_id: str, limit: int = MAX_MESSAGES
) -> list[Message]:
    """The session's first ``limit`` messages in the SDK's messages table, oldest first."""
    statement = _messages_statement(store, table_name)
    rows = await store.ops.fetch(statement, {"session_id": session_id, "limit": limit})
    found = []
    for data, created_at in rows:
        role, text = describe_message(data)
        found.append(Message(role, text, created_at))
    return found
