"""The original proposal's metadata API, in both modes, on every backend.

Without ``metadata_model`` the session is the proposal's: any key, JSON values,
``get_metadata()`` a ``dict``. With a model the same calls are typed. Each case of
the proposal's test list runs in both modes.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typing_extensions import assert_type

from sessionmeta import InvalidArgumentError, SessionMeta, UnknownKeyError, UntypedMeta
from sessionmeta.agents import MetadataSQLAlchemySession
from sessionmeta.core.codec import equality_hash
from sessionmeta.core.plan import MAX_LIMIT
from tests.agents_sdk.test_session import count_rows, texts, user


class ProposalMeta(SessionMeta):
    owner_id: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    settings: dict[str, Any] | None = None
    count: int | None = None
    code: str | None = None


MODES = ["untyped", "typed"]


def open_session(engine: AsyncEngine, mode: str, session_id: str) -> Any:
    if mode == "untyped":
        return MetadataSQLAlchemySession(session_id, engine=engine, create_tables=True)
    return MetadataSQLAlchemySession(
        session_id, engine=engine, metadata_model=ProposalMeta, create_tables=True
    )


def plain(metadata: Any) -> dict[str, Any]:
    """What was read, as the proposal's dict: a model's stored fields, or the dict itself."""
    if isinstance(metadata, dict):
        return metadata
    return {name: getattr(metadata, name) for name in metadata.model_fields_set}


@pytest.mark.parametrize("mode", MODES)
async def test_set_and_get(engine: AsyncEngine, mode: str) -> None:
    session = open_session(engine, mode, "s1")
    await session.set_metadata({"owner_id": "user_123", "title": "My Chat", "tags": ["work"]})
    assert plain(await session.get_metadata()) == {
        "owner_id": "user_123",
        "title": "My Chat",
        "tags": ["work"],
    }
    assert plain(await session.get_metadata(keys=["owner_id", "title"])) == {
        "owner_id": "user_123",
        "title": "My Chat",
    }


@pytest.mark.parametrize("mode", MODES)
async def test_keys_with_none(engine: AsyncEngine, mode: str) -> None:
    session = open_session(engine, mode, "s1")
    await session.set_metadata({"owner_id": "u", "title": None})
    read = await session.get_metadata(keys=["owner_id", "title", "tags"])
    if mode == "untyped":
        # A stored null and a key not stored both read as None; only the first is stored.
        assert read == {"owner_id": "u", "title": None, "tags": None}
        assert await session.get_metadata() == {"owner_id": "u", "title": None}
    else:
        assert (read.owner_id, read.title, read.tags) == ("u", None, None)
        assert read.model_fields_set == {"owner_id", "title"}


@pytest.mark.parametrize("mode", MODES)
async def test_nested_json_keeps_its_types(engine: AsyncEngine, mode: str) -> None:
    session = open_session(engine, mode, "s1")
    nested = {"model": {"name": "small", "temperature": 0.5}, "limits": [1, 2.5, None, True]}
    await session.set_metadata({"settings": nested, "code": "42"})
    read = plain(await session.get_metadata())
    assert read == {"settings": nested, "code": "42"}
    # "42" stays a string; 2.5 a float, True a bool: what JSON says, not a guess.
    assert isinstance(read["code"], str)
    assert [type(item) for item in read["settings"]["limits"]] == [int, float, type(None), bool]


@pytest.mark.parametrize("mode", MODES)
async def test_metadata_creates_the_session(engine: AsyncEngine, mode: str) -> None:
    session = open_session(engine, mode, "fresh")
    await session.set_metadata({"owner_id": "u"})
    assert await count_rows(engine, "agent_sessions", "fresh") == 1
    await session.add_items([user("hello")])
    assert texts(await session.get_items()) == ["hello"]
    assert plain(await session.get_metadata()) == {"owner_id": "u"}


@pytest.mark.parametrize("mode", MODES)
async def test_set_is_an_upsert(engine: AsyncEngine, mode: str) -> None:
    session = open_session(engine, mode, "s1")
    await session.set_metadata({"owner_id": "u", "title": "first"})
    await session.set_metadata({"title": "second", "count": 3})
    assert plain(await session.get_metadata()) == {"owner_id": "u", "title": "second", "count": 3}


@pytest.mark.parametrize("mode", MODES)
async def test_delete_some_keys_then_all(engine: AsyncEngine, mode: str) -> None:
    session = open_session(engine, mode, "s1")
    await session.set_metadata({"owner_id": "u", "title": "t", "tags": ["a"]})
    await session.delete_metadata(keys=["tags"])
    assert plain(await session.get_metadata()) == {"owner_id": "u", "title": "t"}
    await session.delete_metadata()
    assert plain(await session.get_metadata()) == {}


@pytest.mark.parametrize("mode", MODES)
async def test_find_sessions_and_limits(engine: AsyncEngine, mode: str) -> None:
    for number in range(5):
        owner = "user_1" if number % 2 == 0 else "user_2"
        await open_session(engine, mode, f"s{number}").set_metadata({"owner_id": owner})
    finder = open_session(engine, mode, "s0")
    assert await finder.find_sessions_by_metadata("owner_id", "user_1") == ["s0", "s2", "s4"]
    assert await finder.find_sessions_by_metadata("owner_id", "user_1", limit=2) == ["s0", "s2"]
    assert await finder.find_sessions_by_metadata("owner_id", "user_1", limit=None) == [
        "s0",
        "s2",
        "s4",
    ]
    assert await finder.find_sessions_by_metadata("owner_id", "nobody") == []
    with pytest.raises(InvalidArgumentError):
        await finder.find_sessions_by_metadata("owner_id", "user_1", limit=0)


async def test_no_limit_pages_through_every_session(engine: AsyncEngine) -> None:
    # limit=None is every match, beyond the largest page the store serves at once.
    session = open_session(engine, "untyped", "s")
    await session.create_tables()
    ids = [f"s{number:05d}" for number in range(MAX_LIMIT + 5)]
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO agent_sessions (session_id) VALUES (:sid)"),
            [{"sid": sid} for sid in ids],
        )
        # The rows set_metadata({"owner_id": "u"}) writes, written in bulk.
        await connection.execute(
            text(
                "INSERT INTO agent_sessions_metadata "
                "(session_id, `key`, value, value_hash, sort_key) "
                "VALUES (:sid, 'owner_id', '\"u\"', :hash, 'u')".replace(
                    "`key`", '"key"' if engine.dialect.name not in ("mysql", "mariadb") else "`key`"
                )
            ),
            [{"sid": sid, "hash": equality_hash("u")} for sid in ids],
        )
    assert await session.find_sessions_by_metadata("owner_id", "u", limit=None) == ids
    assert await session.find_sessions_by_metadata("owner_id", "u") == ids[:100]


@pytest.mark.parametrize("mode", MODES)
async def test_clear_session_removes_metadata(engine: AsyncEngine, mode: str) -> None:
    session = open_session(engine, mode, "s1")
    await session.add_items([user("hi")])
    await session.set_metadata({"owner_id": "u"})
    await session.clear_session()
    assert await session.get_items() == []
    assert plain(await session.get_metadata()) == {}
    assert await count_rows(engine, "agent_sessions_metadata", "s1") == 0


@pytest.mark.parametrize("mode", MODES)
async def test_sessions_are_isolated(engine: AsyncEngine, mode: str) -> None:
    first, second = open_session(engine, mode, "a"), open_session(engine, mode, "b")
    await first.set_metadata({"owner_id": "u1", "title": "A"})
    await second.set_metadata({"owner_id": "u2"})
    await second.delete_metadata()
    assert plain(await first.get_metadata()) == {"owner_id": "u1", "title": "A"}
    assert plain(await second.get_metadata()) == {}


@pytest.mark.parametrize("mode", MODES)
async def test_empty_dict(engine: AsyncEngine, mode: str) -> None:
    session = open_session(engine, mode, "s1")
    await session.set_metadata({})
    assert plain(await session.get_metadata()) == {}
    await session.set_metadata({"owner_id": "u"})
    await session.set_metadata({})
    assert plain(await session.get_metadata()) == {"owner_id": "u"}


async def test_untyped_takes_any_key_and_refuses_what_json_would_change(
    engine: AsyncEngine,
) -> None:
    session = MetadataSQLAlchemySession("s1", engine=engine, create_tables=True)
    await session.set_metadata({"anything": 1, "ünïcode kéy": "v"})
    for bad in ({"pair": (1, 2)}, {"members": {1, 2}}, {"ratio": float("nan")}):
        with pytest.raises(ValidationError):
            await session.set_metadata({"title": "not written", **bad})
    with pytest.raises(InvalidArgumentError, match="ends with a space"):
        await session.set_metadata({"key ": 1})
    assert await session.get_metadata() == {"anything": 1, "ünïcode kéy": "v"}


async def test_typed_refuses_unknown_keys_and_bad_values(engine: AsyncEngine) -> None:
    session = open_session(engine, "typed", "s1")
    with pytest.raises(UnknownKeyError):
        await session.set_metadata({"colour": "red"})
    with pytest.raises(ValidationError):
        await session.set_metadata({"count": "many"})
    assert plain(await session.get_metadata()) == {}


async def test_modes_are_typed(engine: AsyncEngine) -> None:
    untyped = MetadataSQLAlchemySession("u", engine=engine, create_tables=True)
    assert_type(untyped, MetadataSQLAlchemySession[UntypedMeta])
    assert_type(await untyped.get_metadata(), dict[str, Any])
    typed = MetadataSQLAlchemySession("t", engine=engine, metadata_model=ProposalMeta)
    assert_type(typed, MetadataSQLAlchemySession[ProposalMeta])
    assert_type(await typed.get_metadata(), ProposalMeta)
    assert_type(await typed.find_sessions_by_metadata("owner_id", "u", limit=None), list[str])
