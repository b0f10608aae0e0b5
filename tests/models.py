"""Metadata models shared by the tests."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from sessionmeta import SessionMeta


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Settings(BaseModel):
    temperature: float = 0.5
    model: str = "small"


class ChatMeta(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    incognito: bool | None = None
    priority: int | None = None


class AllTypes(SessionMeta):
    text: str | None = None
    integer: int | None = None
    number: float | None = None
    flag: bool | None = None
    amount: Decimal | None = None
    moment: dt.datetime | None = None
    day: dt.date | None = None
    ident: uuid.UUID | None = None
    level: Priority | None = None
    mode: Literal["fast", "slow"] | None = None
    words: list[str] | None = None
    numbers: set[int] | None = None
    pair: tuple[int, str] | None = None
    dates: list[dt.date] | None = None
    extra: dict[str, Any] | None = None
    settings: Settings | None = None
    renamed: str | None = Field(default=None, alias="old_name")
    blob: bytes | None = None
