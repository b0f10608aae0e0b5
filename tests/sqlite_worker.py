"""Work done in child processes by test_sqlite_processes: importable, no pytest inside."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import create_model
from sqlalchemy.ext.asyncio import create_async_engine

from sessionmeta import ConflictError, MetadataStore, SessionMeta

from .models import ChatMeta

TASKS_PER_PROCESS = 4


async def _write_many(path: str, worker: int, count: int) -> list[str]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    store = MetadataStore(ChatMeta, engine)
    errors: list[str] = []

    async def task(number: int) -> None:
        shared = store.bind("shared")
        own = store.bind(f"w{worker}-{number}")
        for index in range(count):
            tag = f"w{worker}-{number}-{index}"
            try:
                await shared.add_to("tags", tag)
                await own.set_metadata({"priority": index, "title": tag})
                await shared.set_metadata({"owner_id": tag})
                while True:
                    read = await shared.get_metadata_versioned(["priority"])
                    try:
                        await shared.set_metadata(
                            {"priority": (read.metadata.priority or 0) + 1},
                            expected_version=read.version,
                        )
                        break
                    except ConflictError:
                        continue
            except Exception as exc:  # every error is the test's finding
                errors.append(f"{type(exc).__name__}: {exc}")

    try:
        await asyncio.gather(*(task(number) for number in range(TASKS_PER_PROCESS)))
    finally:
        await engine.dispose()
    return errors


def write_many(path: str, worker: int, count: int) -> list[str]:
    """Run in a child process: write ``count`` rounds from several tasks; return the errors."""
    return asyncio.run(_write_many(path, worker, count))


Ten = create_model(  # type: ignore[call-overload]
    "Ten", __base__=SessionMeta, **{f"k{index}": (int | None, None) for index in range(10)}
)


async def _write_until_killed(path: str) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    store: MetadataStore[Any] = MetadataStore(Ten, engine)
    meta = store.bind("s")
    for round_ in range(1, 1_000_000):
        await meta.set_metadata({f"k{index}": round_ for index in range(10)})


def write_until_killed(path: str) -> None:
    """Run in a child process: write all ten keys, each round a new number, until killed."""
    asyncio.run(_write_until_killed(path))
