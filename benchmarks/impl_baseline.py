"""The per-key baseline: the original proposal's approach, written the usual way.

An ORM ``AsyncSession`` per call; ``set_metadata`` selects the session row,
inserts it when missing, then runs one upsert per key; values are stored as
``json.dumps`` text (``str()`` for what JSON cannot hold) in the proposal's
schema, with its ``(key, value)`` index. Reads decode with ``json.loads``.

On MariaDB/MySQL the schema needs what any port of it would: a length for the
session id (VARCHAR(255)) and a prefix for the indexed text value (255
characters); the upsert is ``ON DUPLICATE KEY UPDATE``. The columns take the
database's default charset and collation, as the proposal's tables would.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from data import TWO_KEYS, owner_of, session_id, values_of
from sqlalchemy import (
    TIMESTAMP,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    case,
    cast,
    delete,
    func,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


# MySQL indexes no string without a length.
SessionId = String().with_variant(mysql.VARCHAR(255), "mysql", "mariadb")


class BaselineSession(Base):
    __tablename__ = "smbench_base_sessions"

    session_id: Mapped[str] = mapped_column(SessionId, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(TIMESTAMP, server_default=func.now())


class BaselineMetadata(Base):
    __tablename__ = "smbench_base_metadata"

    session_id: Mapped[str] = mapped_column(
        SessionId, ForeignKey(BaselineSession.session_id, ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(TIMESTAMP, server_default=func.now())

    __table_args__ = (
        Index("idx_smbench_base_key_value", "key", "value", mysql_length={"value": 255}),
    )


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def rows_of(index: int) -> list[dict[str, Any]]:
    return [
        {"session_id": session_id(index), "key": key, "value": dumps(value)}
        for key, value in values_of(index).items()
    ]


class BaselineImpl:
    name = "per-key baseline"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.dialect = engine.dialect.name

    async def set_metadata(self, sid: str, values: dict[str, Any]) -> None:
        async with self.sessions() as session, session.begin():
            if await session.get(BaselineSession, sid) is None:
                session.add(BaselineSession(session_id=sid))
                await session.flush()
            for key, value in values.items():
                await session.execute(self._upsert(sid, key, dumps(value)))

    def _upsert(self, sid: str, key: str, value: str) -> Any:
        row = {"session_id": sid, "key": key, "value": value}
        if self.dialect in ("mysql", "mariadb"):
            insert = mysql.insert(BaselineMetadata).values(row)
            return insert.on_duplicate_key_update(
                value=insert.inserted.value, updated_at=func.now()
            )
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        upsert = dialect.insert(BaselineMetadata).values(row)
        return upsert.on_conflict_do_update(
            index_elements=["session_id", "key"],
            set_={"value": upsert.excluded.value, "updated_at": func.now()},
        )

    async def get_metadata(self, sid: str, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        query = select(BaselineMetadata.key, BaselineMetadata.value).where(
            BaselineMetadata.session_id == sid
        )
        if keys is not None:
            query = query.where(BaselineMetadata.key.in_(keys))
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return {key: json.loads(value) for key, value in rows if value is not None}

    async def delete_metadata(self, sid: str, keys: list[str]) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(BaselineMetadata).where(
                    BaselineMetadata.session_id == sid, BaselineMetadata.key.in_(keys)
                )
            )

    async def find(self, key: str, value: Any, limit: int = 100) -> list[str]:
        query = (
            select(BaselineMetadata.session_id)
            .where(BaselineMetadata.key == key, BaselineMetadata.value == dumps(value))
            .order_by(BaselineMetadata.session_id)
            .limit(limit)
        )
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars())

    # The operations, in the benchmark's terms.

    async def set1(self, index: int) -> None:
        await self.set_metadata(session_id(index), {"title": f"Renamed {index}"})

    async def set10(self, index: int) -> None:
        await self.set_metadata(session_id(index), values_of(index))

    async def get_all(self, index: int) -> Any:
        return await self.get_metadata(session_id(index))

    async def get2(self, index: int) -> Any:
        return await self.get_metadata(session_id(index), TWO_KEYS)

    async def delete1(self, index: int) -> None:
        await self.delete_metadata(session_id(index), ["title"])

    async def find_eq(self, index: int) -> Any:
        return await self.find("owner_id", owner_of(index))

    async def find_range(self, index: int, start: int) -> Any:
        # Text values order as text ("10" < "9"): a range needs a cast, and the
        # CASE keeps the cast away from other keys' values.
        number = case((BaselineMetadata.key == "priority", cast(BaselineMetadata.value, Integer)))
        query = (
            select(BaselineMetadata.session_id)
            .where(BaselineMetadata.key == "priority", number >= start)
            .order_by(BaselineMetadata.session_id)
            .limit(100)
        )
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars())

    async def list50(self, index: int) -> Any:
        """Without a listing query: find the ids, then one read per session."""
        ids = await self.find("owner_id", owner_of(index), limit=50)
        return [(sid, await self.get_metadata(sid)) for sid in ids]

    async def get_many(self, ids: list[str]) -> Any:
        return {sid: await self.get_metadata(sid) for sid in ids}
