"""Server time of `sessionmeta serve`'s list page on a large PostgreSQL database.

    python benchmarks/serve_list.py                      # 1,000,000 sessions, 50 requests a page
    python benchmarks/serve_list.py --quick              # 10,000 sessions, seconds
    python benchmarks/serve_list.py --sessions 100000 --requests 100 --keep

Loads ``--sessions`` sessions of the benchmark model (ten keys each; ``data.py``: 100
sessions an owner, every other one tagged ``billing``) with COPY, the rows exactly as
``set_many`` stores them (``setup_db.check_encoding``), then requests list pages from the
admin app in this process (``httpx.ASGITransport``, no network, no browser): each figure
is the whole request, filter parsing, the store's listing statement (with the count
that picks its shape), the page's template and the response, as the server spends it.
Each page is requested ``--requests`` times (after ``--warmup``), for a different
owner each time where it filters by owner, and reported as median, min and max, with
the app's own ``Server-Timing``. Pages, 50 sessions each:

* ``owner + tag, newest first``: ``owner_id = userN``, ``tags`` contains ``billing``,
  ordered by ``started`` descending (50 of an owner's 100 sessions match);
* ``owner, by priority``: ``owner_id = userN``, ordered by ``priority`` descending;
* ``tag, newest first``: ``tags`` contains ``billing`` (half of all sessions), ordered by
  ``started`` descending, the first page;
* ``everything, by id``: no filter, ordered by session id, a page from the middle
  (its cursor made by a first request, untimed).

PostgreSQL is ``--postgres-url``, else ``SESSIONMETA_BENCH_POSTGRES_URL``, else
``SESSIONMETA_TEST_POSTGRES_URL``. Only the tables ``smbench_serve_*`` are created,
dropped at the end unless ``--keep`` (then a later run with ``--reuse`` skips the load).
Output: a table, and ``serve_list.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Benchmark this checkout's code, whatever is installed.
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import httpx  # noqa: E402
from data import SESSIONS_PER_OWNER, BenchMeta, session_id  # noqa: E402
from setup_db import ITEM_COLUMNS, all_rows, batches, check_encoding  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

import sessionmeta  # noqa: E402
from sessionmeta import MetadataStore, field  # noqa: E402
from sessionmeta.web import create_app  # noqa: E402

SESSIONS = "smbench_serve_sessions"
METADATA = "smbench_serve_metadata"
TABLES = (f"{METADATA}_items", METADATA, SESSIONS)
VALUE_COLUMNS = ["session_id", "key", "value", "value_hash", "sort_key"]
DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/sessionmeta_test"
COLUMNS = "&c=owner_id&c=title&c=tags&c=status&c=priority&c=started"


def say(text_: str) -> None:
    print(f"  {text_}", file=sys.stderr, flush=True)


async def drop_tables(admin: AsyncEngine) -> None:
    async with admin.begin() as connection:
        # The claims of unique fields too: the store's create_tables() makes that table.
        for table in (f"{METADATA}_unique", *TABLES):
            await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))


async def load(url: str, store: MetadataStore[BenchMeta], count: int) -> float:
    """``count`` sessions by COPY on an asyncpg connection of its own; seconds taken."""
    import asyncpg

    check_encoding()  # COPY stores exactly what set_many would
    await store.create_tables()
    copy = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    started = time.perf_counter()
    try:
        step = max(count // 10, 1)
        shown = 0
        for batch in batches(0, count, 20_000):
            ids = [(session_id(index),) for index in batch]
            await copy.copy_records_to_table(SESSIONS, records=ids, columns=["session_id"])
            rows, items = all_rows(batch)
            await copy.copy_records_to_table(METADATA, records=rows, columns=VALUE_COLUMNS)
            await copy.copy_records_to_table(TABLES[0], records=items, columns=ITEM_COLUMNS)
            if batch.stop - shown >= step:
                shown = batch.stop
                say(f"loaded {batch.stop:,} sessions ({time.perf_counter() - started:.0f} s)")
        # As autovacuum would soon after a load this size: the planner's statistics.
        for table in TABLES:
            await copy.execute(f"ANALYZE {table}")
    finally:
        await copy.close()
    return time.perf_counter() - started


def pages(count: int) -> dict[str, Any]:
    """Each timed page: a function of the request's number to its URL."""
    owners = max(count // SESSIONS_PER_OWNER, 1)

    def owner(number: int) -> str:
        # Owners spread over the whole table, a different one each request.
        return f"user{(number * 7919) % owners}"

    return {
        "owner + tag, newest first": lambda n: (
            f"/?v:owner_id={owner(n)}&v:tags=billing&order=-key:started&limit=50{COLUMNS}"
        ),
        "owner, by priority": lambda n: (
            f"/?v:owner_id={owner(n)}&order=-key:priority&limit=50{COLUMNS}"
        ),
        "tag, newest first": lambda n: f"/?v:tags=billing&order=-key:started&limit=50{COLUMNS}",
        "everything, by id": None,  # its URL needs a cursor, made below
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values), 2),
        "min_ms": round(min(values), 2),
        "max_ms": round(max(values), 2),
    }


async def measure(
    client: httpx.AsyncClient, url_of: Any, requests: int, warmup: int, expect: int
) -> dict[str, Any]:
    wall: list[float] = []
    app: list[float] = []
    for number in range(-warmup, requests):
        url = url_of(number)
        started = time.perf_counter()
        response = await client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.text[:500]}")
        shown = response.text.count('class="session-link"')
        if shown != expect:
            raise SystemExit(f"{url}: {shown} sessions listed, expected {expect}")
        if number >= 0:
            wall.append(elapsed)
            app.append(float(response.headers["server-timing"].split("dur=")[1]))
    return {"request": summary(wall), "app": summary(app), "requests": requests}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = (
        args.postgres_url
        or os.environ.get("SESSIONMETA_BENCH_POSTGRES_URL")
        or os.environ.get("SESSIONMETA_TEST_POSTGRES_URL")
        or DEFAULT_URL
    )
    engine = create_async_engine(url)
    admin = create_async_engine(url, poolclass=NullPool)
    store = MetadataStore(
        BenchMeta, engine, sessions_table=SESSIONS, metadata_table=METADATA, on_invalid="default"
    )
    results: dict[str, Any] = {}
    load_s = None
    try:
        if not args.reuse:
            await drop_tables(admin)
            say(f"loading {args.sessions:,} sessions")
            load_s = await load(url, store, args.sessions)
        app = create_app(store)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for name, url_of in pages(args.sessions).items():
                if url_of is None:
                    cursor = await middle_cursor(store, args.sessions // 2)
                    page_url = f"/?order=session_id&limit=50{COLUMNS}&cursor={cursor}"

                    def url_of(n: int, page_url: str = page_url) -> str:
                        return page_url

                say(f"{name}: {args.requests} requests")
                results[name] = await measure(client, url_of, args.requests, args.warmup, expect=50)
    finally:
        if not args.keep:
            await drop_tables(admin)
        await engine.dispose()
        await admin.dispose()
    return {"sessions": args.sessions, "load_s": load_s, "pages": results}


async def middle_cursor(store: MetadataStore[BenchMeta], index: int) -> str:
    """The cursor after session ``index`` in id order (ids sort as their index, and
    ``priority`` is the index), as the store makes it."""
    page = await store.find_sessions(field("priority") >= index, order_by="session_id", limit=1)
    assert list(page) == [session_id(index)] and page.next_cursor is not None
    return page.next_cursor


def table(run_: dict[str, Any]) -> str:
    lines = [
        f"list page of 50 at {run_['sessions']:,} sessions, PostgreSQL "
        "(request = the whole ASGI request in process; app = its Server-Timing)",
        f"{'page':<28}{'median ms':>10}{'min':>8}{'max':>8}{'app median':>12}",
    ]
    for name, figures in run_["pages"].items():
        request, app = figures["request"], figures["app"]
        lines.append(
            f"{name:<28}{request['median_ms']:>10.1f}{request['min_ms']:>8.1f}"
            f"{request['max_ms']:>8.1f}{app['median_ms']:>12.1f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url")
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10,000 sessions, 10 requests")
    parser.add_argument("--keep", action="store_true", help="leave the tables for --reuse")
    parser.add_argument("--reuse", action="store_true", help="the tables of a --keep run")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.requests, args.warmup = 10_000, 10, 2
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_ = await run(args)
    run_.update(
        {
            "sessionmeta": sessionmeta.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        }
    )
    print(table(run_))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_list.json").write_text(json.dumps(run_, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
