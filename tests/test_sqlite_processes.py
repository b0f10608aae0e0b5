"""SQLite with several processes writing one file: the busy timeout and the bounded retry
keep "database is locked" from the callers."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from sessionmeta import MetadataStore

from .models import ChatMeta
from .sqlite_worker import TASKS_PER_PROCESS, Ten, write_many, write_until_killed

PROCESSES = 4
ROUNDS = 6


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


@pytest.mark.sqlite
async def test_a_writer_killed_mid_write_leaves_all_or_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "killed.sqlite3")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    store: MetadataStore[Any] = MetadataStore(Ten, engine)
    await store.create_tables()
    meta = store.bind("s")
    try:
        for kill_after in (3, 17, 40):
            process = multiprocessing.get_context("spawn").Process(
                target=write_until_killed, args=(path,)
            )
            process.start()
            try:
                # Wait (bounded) until the writer is well into its rounds, then kill it
                # wherever it is: most of its time is spent inside a write.
                for _ in range(60 * 20):
                    read = await meta.get_metadata(["k0"])
                    if (read.k0 or 0) >= kill_after or not process.is_alive():
                        break
                    await asyncio.sleep(0.05)
                assert process.is_alive(), "the writer died before it was killed"
                os.kill(process.pid or 0, signal.SIGKILL)
            finally:
                process.join(60)
            read = await meta.get_metadata()
            values = {getattr(read, f"k{index}") for index in range(10)}
            assert len(values) == 1, values  # every key from the same round
            async with engine.connect() as connection:
                assert (await connection.exec_driver_sql("PRAGMA integrity_check")).scalar() == "ok"
            # The killed writer's lock and journal do not block the next writer.
            await meta.set_metadata({f"k{index}": 0 for index in range(10)})
    finally:
        await engine.dispose()
