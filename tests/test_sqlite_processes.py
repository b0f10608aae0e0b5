"""SQLite with several processes writing one file: the busy timeout and the bounded retry
keep "database is locked" from the callers."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from sessionmeta import MetadataStore

from .models import ChatMeta
from .sqlite_worker import TASKS_PER_PROCESS, write_many

PROCESSES = 4
ROUNDS = 10


@pytest.mark.sqlite
async def test_processes_writing_one_file_see_no_lock_errors(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    store = MetadataStore(ChatMeta, engine)
    await store.create_tables()
    try:
        loop = asyncio.get_running_loop()
        # spawn, not fork: the parent runs threads (aiosqlite) that fork would copy mid-state.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
            errors = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, write_many, path, worker, ROUNDS)
                    for worker in range(PROCESSES)
                )
            )
        assert [error for worker_errors in errors for error in worker_errors] == []
        shared = await store.bind("shared").get_metadata()
        writers = [
            f"w{worker}-{number}"
            for worker in range(PROCESSES)
            for number in range(TASKS_PER_PROCESS)
        ]
        assert sorted(shared.tags or []) == sorted(
            f"{writer}-{index}" for writer in writers for index in range(ROUNDS)
        )
        # Every conditional increment landed exactly once.
        assert shared.priority == len(writers) * ROUNDS
        for writer in writers:
            own = await store.bind(writer).get_metadata()
            assert (own.priority, own.title) == (ROUNDS - 1, f"{writer}-{ROUNDS - 1}")
    finally:
        await engine.dispose()
