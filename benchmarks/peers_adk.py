"""Google ADK's ``DatabaseSessionService`` for ``peers.py``, as a worker process.

google-adk pins ``opentelemetry-api<=1.44`` and ``websockets<16``, below what the
project's ``dev`` and ``agents`` extras install in ``.venv``, so it runs in a venv of its
own (``benchmarks/.venv-peers``, made by ``benchmarks/peers_venv.sh``) and ``peers.py``
drives it through this worker: one JSON request per line on stdin, one JSON answer per
line on stdout. The worker times each operation itself, so the pipe's round trip is not
in any figure; ``peers.py`` still interleaves it with the other implementations round
by round, as they are. Not meant to be run by hand.

The session's ``state`` holds the metadata; ``user_id`` is the owner. In PostgreSQL ADK's
tables (``sessions``, ``events``, ``app_states``, ``user_states``,
``adk_internal_metadata``) live in the schema ``smpeer_adk``; ``peers.py`` drops it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from google.adk.events import Event, EventActions  # noqa: E402
from google.adk.sessions import DatabaseSessionService  # noqa: E402
from google.adk.sessions.base_session_service import GetSessionConfig  # noqa: E402
from peers_workload import (  # noqa: E402
    ADK_APP,
    LIST_LIMIT,
    find_window,
    json_values,
    matches,
    owner_of,
    read_index,
    session_id,
    update_values,
    write_index,
)
from sqlalchemy import event, text  # noqa: E402

SCHEMA = "smpeer_adk"
TABLES = ("events", "sessions", "user_states", "app_states")
NO_EVENTS = GetSessionConfig(num_recent_events=0)


def sqlite_setting(synchronous: str) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.close()

    return on_connect


class AdkWorker:
    def __init__(self, url: str, sessions: int, synchronous: str | None) -> None:
        self.sessions = sessions
        self.postgres = url.startswith("postgresql")
        if self.postgres:
            # ADK's own defaults for a server database (pool_pre_ping=True among them),
            # with its tables in a schema of their own.
            self.service = DatabaseSessionService(
                db_url=url, connect_args={"server_settings": {"search_path": SCHEMA}}
            )
        else:
            self.service = DatabaseSessionService(db_url=url)
            if synchronous:
                engine = self.service.db_engine.sync_engine
                event.listen(engine, "connect", sqlite_setting(synchronous))

    async def setup(self) -> dict[str, Any]:
        await self.service.prepare_tables()
        return {"google-adk": importlib.metadata.version("google-adk")}

    async def reset(self) -> None:
        async with self.service.db_engine.begin() as connection:
            if self.postgres:
                await connection.execute(text(f"TRUNCATE {', '.join(TABLES)}"))
            else:
                for table in TABLES:
                    await connection.execute(text(f"DELETE FROM {table}"))

    async def after_load(self) -> None:
        async with self.service.db_engine.begin() as connection:
            for table in TABLES:
                await connection.execute(text(f"ANALYZE {table}"))

    async def bulk(self, count: int) -> int:
        # No batch API: one create_session per session.
        for index in range(count):
            await self.service.create_session(
                app_name=ADK_APP,
                user_id=owner_of(index),
                session_id=session_id(index),
                state=json_values(index),
            )
        return count

    async def update3(self, i: int) -> Any:
        # ADK's way to change state outside a run: an event carrying a state delta,
        # appended to the session as loaded (without its events).
        index = write_index(i, self.sessions)
        session = await self.service.get_session(
            app_name=ADK_APP,
            user_id=owner_of(index),
            session_id=session_id(index),
            config=NO_EVENTS,
        )
        assert session is not None, index
        await self.service.append_event(
            session,
            Event(
                invocation_id=f"update-{i}",
                author="user",
                actions=EventActions(state_delta=update_values(i)),
            ),
        )
        return None

    async def read1(self, i: int) -> Any:
        index = read_index(i, self.sessions)
        session = await self.service.get_session(
            app_name=ADK_APP,
            user_id=owner_of(index),
            session_id=session_id(index),
            config=NO_EVENTS,
        )
        assert session is not None, index
        return session.state

    async def list50(self, i: int) -> Any:
        # list_sessions returns all the user's sessions, oldest update first: the newest
        # 50 are taken in Python.
        index = read_index(i, self.sessions)
        response = await self.service.list_sessions(app_name=ADK_APP, user_id=owner_of(index))
        newest = sorted(response.sessions, key=lambda s: s.last_update_time, reverse=True)
        return [(s.id, s.state) for s in newest[:LIST_LIMIT]]

    async def find(self, i: int) -> Any:
        # State cannot be queried: every session of the app is loaded, then filtered.
        low, high = find_window(i, self.sessions)
        response = await self.service.list_sessions(app_name=ADK_APP)
        return [s.id for s in response.sessions if matches(s.state, low, high)]

    async def close(self) -> None:
        await self.service.close()


def summary(op: str, result: Any) -> Any:
    """What peers.py compares across implementations (untimed)."""
    if op == "list50":
        return [sid for sid, _ in result]
    if op == "find":
        return sorted(result)
    return result


async def timed(method: Callable[[int], Awaitable[Any]], index: int) -> tuple[float, Any]:
    start = time.perf_counter_ns()
    result = await method(index)
    return (time.perf_counter_ns() - start) / 1000, result


async def serve(worker: AdkWorker, requests: Any, answer: Callable[[dict[str, Any]], None]) -> None:
    while True:
        line = requests.readline()
        if not line:
            return
        request = json.loads(line)
        command = request["command"]
        try:
            if command == "quit":
                answer({"ok": True})
                return
            if command == "setup":
                answer({"ok": True, "versions": await worker.setup()})
            elif command in ("reset", "after_load"):
                await getattr(worker, command)()
                answer({"ok": True})
            elif command == "run":
                op = request["op"]
                us, result = await timed(getattr(worker, op), request["index"])
                reply: dict[str, Any] = {"ok": True, "us": us}
                if request.get("check"):
                    reply["result"] = summary(op, result)
                answer(reply)
            elif command == "memory":
                method = getattr(worker, request["op"])
                tracemalloc.start()
                try:
                    await method(request["index"])
                    peak = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
                answer({"ok": True, "peak": peak})
            else:
                answer({"ok": False, "error": f"unknown command {command!r}"})
        except Exception as exc:  # reported to peers.py, which fails the run
            answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


async def main() -> None:
    parser = argparse.ArgumentParser(description="Google ADK worker for peers.py")
    parser.add_argument("--url", required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--sqlite-synchronous")
    args = parser.parse_args()
    # Answers go to the real stdout; anything a library prints goes to stderr.
    channel = sys.stdout
    sys.stdout = sys.stderr

    def answer(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    worker = AdkWorker(args.url, args.sessions, args.sqlite_synchronous)
    try:
        await serve(worker, sys.stdin, answer)
    finally:
        await worker.close()


if __name__ == "__main__":
    asyncio.run(main())
