"""`sessionmeta check` run from the admin page: one scan at a time, in the background,
with its progress for the page to show while it reads a large table."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from sessionmeta.errors import SessionMetaError
from sessionmeta.io.check import CheckReport, check_store, count_stored_rows
from sessionmeta.io.store import MetadataStore

__all__ = ["CheckJob", "CheckRunner"]


@dataclass
class CheckJob:
    """One scan: rows read of how many, and its report (or error) once done."""

    total: int
    started: float = field(default_factory=time.monotonic)
    read: int = 0
    finished: float | None = None
    report: CheckReport | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, self.read * 100 // self.total)

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class CheckRunner:
    """Starts scans and keeps the last one; a scan already running is not started twice."""

    def __init__(self, store: MetadataStore[Any], *, batch_size: int = 5_000) -> None:
        self.store = store
        self.batch_size = batch_size
        self.job: CheckJob | None = None
        self._task: asyncio.Task[None] | None = None

    async def launch(self) -> CheckJob:
        if self.job is not None and self.job.running:
            return self.job
        job = self.job = CheckJob(total=await count_stored_rows(self.store))
        self._task = asyncio.create_task(self._run(job))
        return job

    async def _run(self, job: CheckJob) -> None:
        def progress(read: int) -> None:
            job.read = read

        try:
            job.report = await check_store(
                self.store, batch_size=self.batch_size, progress=progress
            )
        except SessionMetaError as exc:
            job.error = str(exc)
        finally:
            job.finished = time.monotonic()

    async def close(self) -> None:
        """Stop a scan still running (the server is shutting down)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
