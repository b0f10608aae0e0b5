"""Models with encrypted fields, shared by the encryption tests and the CLI's (by path)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field

from sessionmeta import Encrypted, SessionMeta


class Tier(str, enum.Enum):
    FREE = "free"
    PRO = "pro"


class Address(BaseModel):
    street: str
    city: str


class Contact(SessionMeta):
    """Every kind of value an encrypted field takes, beside plain fields."""

    email: Annotated[str | None, Encrypted()] = None
    phone: Annotated[str | None, Encrypted(), Field(max_length=40)] = None
    age: Annotated[int | None, Encrypted()] = None
    score: Annotated[float | None, Encrypted()] = None
    balance: Annotated[Decimal | None, Encrypted()] = None
    born: Annotated[dt.date | None, Encrypted()] = None
    seen_at: Annotated[dt.datetime | None, Encrypted()] = None
    verified: Annotated[bool | None, Encrypted()] = None
    ref: Annotated[uuid.UUID | None, Encrypted()] = None
    tier: Annotated[Tier | None, Encrypted()] = None
    aliases: Annotated[list[str] | None, Encrypted()] = None
    codes: Annotated[set[int] | None, Encrypted()] = None
    profile: Annotated[dict[str, Any] | None, Encrypted()] = None
    address: Annotated[Address | None, Encrypted()] = None
    owner_id: str | None = None
    tags: list[str] | None = None


class PlainContact(SessionMeta):
    """``Contact`` before its fields were declared encrypted (same keys, plain storage)."""

    email: str | None = None
    aliases: list[str] | None = None
    owner_id: str | None = None
