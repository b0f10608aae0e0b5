"""Benchmark sessionmeta against the per-key baseline and the raw-driver floor.

    python benchmarks/run.py                 # SQLite, PostgreSQL (scaling to 1,000,000 sessions)
                                             # and MariaDB/MySQL
    python benchmarks/run.py --quick         # a tiny run that only proves the command works
    python benchmarks/run.py --backends sqlite --rounds 500

Measures, in one run and on the same database and data, each operation through
sessionmeta's public API, through the original proposal's per-key approach, as
one hand-written statement on the driver (the floor), and one ``SELECT 1``.
Writes a table to stdout, ``results.json`` and (with PostgreSQL scaling)
``scaling.png`` into ``--out``. PostgreSQL is taken from ``--postgres-url``,
else ``SESSIONMETA_BENCH_POSTGRES_URL``, else ``SESSIONMETA_TEST_POSTGRES_URL``,
else the local server; MariaDB/MySQL likewise from ``--mysql-url``,
``SESSIONMETA_BENCH_MYSQL_URL``, ``SESSIONMETA_TEST_MYSQL_URL``. Only tables
named ``smbench_*`` are created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Benchmark this checkout's code, whatever is installed.
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import harness  # noqa: E402
import query_ops  # noqa: E402
import setup_db  # noqa: E402
from data import BenchMeta, owner_of, session_id  # noqa: E402
from harness import Entry, Result  # noqa: E402
from impl_baseline import BaselineImpl  # noqa: E402
from impl_raw import RawAiomysql, RawAiosqlite, RawAsyncpg, RawSqlite3, Sql  # noqa: E402
from impl_sessionmeta import SessionmetaImpl  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

import sessionmeta  # noqa: E402
from sessionmeta import MetadataStore  # noqa: E402

BASELINE = "per-key baseline"
SM = "sessionmeta"
SM_X50 = "sessionmeta, 50x get_metadata"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL_URL = "mysql+aiomysql://root@127.0.0.1:3306/test"
FLOORS = {
    "sqlite": ["raw (aiosqlite)", "raw (sqlite3)"],
    "postgres": ["raw (asyncpg)"],
    "mysql": ["raw (aiomysql)"],
}


def postgres_url(given: str | None) -> str:
    return (
        given
        or os.environ.get("SESSIONMETA_BENCH_POSTGRES_URL")
        or os.environ.get("SESSIONMETA_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL
    )


def mysql_url(given: str | None) -> str:
    return (
        given
        or os.environ.get("SESSIONMETA_BENCH_MYSQL_URL")
        or os.environ.get("SESSIONMETA_TEST_MYSQL_URL")
        or DEFAULT_MYSQL_URL
    )


async def connect_aiomysql(url: str) -> Any:
    """One aiomysql connection to the server and database of a SQLAlchemy URL, in
    autocommit: each statement commits alone."""
    import aiomysql

    parsed = make_url(url)
    return await aiomysql.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        db=parsed.database,
        autocommit=True,
    )


def operations(
    sessions: int, sm: SessionmetaImpl, baseline: BaselineImpl, raws: list[Any], queries: Any
) -> list[tuple[str, list[Entry]]]:
    """Every operation with its implementations. Reads use the first half of the
    sessions, writes the second half, so writes never disturb what reads expect."""
    half = sessions // 2

    def read(i: int) -> int:
        return i % half

    def write(i: int) -> int:
        return half + i % half

    def each(method: str, pick: Any, impls: list[Any], **extra: Any) -> list[Entry]:
        entries = []
        for impl in impls:
            function = getattr(impl, method)

            async def call(i: int, function: Any = function) -> Any:
                return await function(pick(i), **extra)

            prepare = None
            if method == "delete1":
                # Put the key back, untimed, so every delete removes a row.
                async def prepare(i: int, impl: Any = impl) -> Any:
                    return await impl.set1(pick(i))
            elif hasattr(impl, "prepare"):

                async def prepare(i: int, impl: Any = impl, method: str = method) -> Any:
                    return await impl.prepare(method, pick(i))

            entries.append(Entry(impl.name, call, prepare))
        return entries

    all_impls = [sm, baseline, *raws]
    range_from = half - 150
    ops: list[tuple[str, list[Entry]]] = [
        ("set 1 key", each("set1", write, all_impls)),
        ("set 10 keys", each("set10", write, all_impls)),
        ("get all 10 keys", each("get_all", read, all_impls)),
        ("get 2 keys", each("get2", read, all_impls)),
        ("delete 1 key", each("delete1", write, all_impls)),
        ("find by equality", each("find_eq", read, all_impls)),
        ("round trip (SELECT 1)", each("select1", read, raws)),
    ]

    # The query API (issue 3): sessionmeta's rows appear once it is in the package.
    range_impls = [baseline, *raws] if queries is None else [queries, baseline, *raws]
    ops.append(("find by range", _range_entries(range_impls, read, range_from)))

    def ids_for(i: int) -> list[str]:
        first = (i * 50) % max(half - 50, 1)
        return [session_id(first + k) for k in range(50)]

    async def sm_x50_list(i: int) -> Any:
        ids = await sm.store.find_sessions_by_metadata("owner_id", owner_of(read(i)), limit=50)
        return await sm.get_metadata_x50(ids)

    async def sm_x50_many(i: int) -> Any:
        return await sm.get_metadata_x50(ids_for(i))

    list_entries = [Entry(SM_X50, sm_x50_list)]
    many_entries = [Entry(SM_X50, sm_x50_many)]
    for impl in ([] if queries is None else [queries]) + [baseline, *raws]:

        async def list_call(i: int, impl: Any = impl) -> Any:
            return await impl.list50(read(i))

        async def many_call(i: int, impl: Any = impl) -> Any:
            return await impl.get_many(ids_for(i))

        list_entries.append(Entry(impl.name, list_call))
        many_entries.append(Entry(impl.name, many_call))
    ops.append(("list_sessions of 50", list_entries))
    ops.append(("get_many of 50", many_entries))
    return ops


def _range_entries(impls: list[Any], read: Any, start: int) -> list[Entry]:
    entries = []
    for impl in impls:

        async def call(i: int, impl: Any = impl) -> Any:
            return await impl.find_range(read(i), start)

        entries.append(Entry(impl.name, call))
    return entries


# SQLite as the store leaves it by default, on every connection alike: the file in WAL
# (the store switches it; setup_db.load_sqlite sets it too, for the baseline and the raw
# floor on the same file) and SQLite's default synchronous (FULL). No tuning of our own:
# the store is measured as a user gets it.
SQLITE_SETTINGS = ("PRAGMA foreign_keys = ON", "PRAGMA busy_timeout = 5000")


async def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> list[Result]:
    sessions = args.sessions
    if backend == "sqlite":
        path = workdir / "bench.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
    elif backend == "mysql":
        url = mysql_url(args.mysql_url)
    else:
        url = postgres_url(args.postgres_url)
    engine = create_async_engine(url)
    baseline_engine = create_async_engine(url)
    store = MetadataStore(
        BenchMeta,
        engine,
        sessions_table=setup_db.SESSIONS_TABLE,
        metadata_table=setup_db.METADATA_TABLE,
    )
    await setup_db.create_tables(engine, store)
    sql = Sql(setup_db.SESSIONS_TABLE, setup_db.METADATA_TABLE, backend)
    range_from = sessions // 2 - 150
    closers: list[Any] = []
    if backend == "postgres":
        import asyncpg

        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn)
        closers.append(connection.close)
        await setup_db.load_postgres(connection, sessions)
        raws: list[Any] = [RawAsyncpg(connection, sql, range_from)]
    elif backend == "mysql":
        mysql_connection = await connect_aiomysql(url)
        closers.append(mysql_connection.ensure_closed)
        await setup_db.load_mysql(mysql_connection, sessions)
        raws = [RawAiomysql(mysql_connection, sql, range_from)]
    else:
        import aiosqlite

        setup_db.load_sqlite(str(path), sessions)
        async_connection = await aiosqlite.connect(path)
        sync_connection = sqlite3.connect(path)
        for setting in SQLITE_SETTINGS:
            await async_connection.execute(setting)
            sync_connection.execute(setting)
        closers += [async_connection.close]
        raws = [
            RawAiosqlite(async_connection, sql, range_from),
            RawSqlite3(sync_connection, sql, range_from),
        ]
    queries = query_ops.SessionmetaQueries(store) if query_ops.available() else None
    results: list[Result] = []
    try:
        for op, entries in operations(
            sessions, SessionmetaImpl(store), BaselineImpl(baseline_engine), raws, queries
        ):
            started = time.perf_counter()
            results += await harness.measure(
                backend, op, entries, rounds=args.rounds, warmup=args.warmup
            )
            print(f"  {backend}: {op} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
        if backend == "postgres" and args.scale:
            import scaling

            try:
                results += await scaling.run(url, args.scale, args.scale_rounds, args.warmup)
            except Exception:
                # Keep what was measured; the run still fails at the end.
                traceback.print_exc()
                args.failed = True
    finally:
        for close in closers:
            await close()
        if backend == "sqlite":
            sync_connection.close()
        await store.close()
        await engine.dispose()
        await baseline_engine.dispose()
    return results


TARGETS = ["set 10 keys", "get all 10 keys", "get 2 keys", "find by equality"]


def check_targets(results: list[Result], floors: dict[str, list[str]]) -> list[str]:
    """The issue's targets, each as one line saying whether it holds."""
    lines = []
    by_key = {(r.backend, r.op, r.sessions, r.impl): r for r in results}
    for backend, floor_names in floors.items():
        for op in TARGETS:
            ours = by_key.get((backend, op, None, SM))
            if ours is None:
                continue
            for floor in floor_names:
                ratio = ours.ratios.get(floor)
                if ratio is not None:
                    verdict = "holds" if ratio <= 1.5 else "MISSES"
                    lines.append(
                        f"{backend}: {op} at {ratio:.2f}x {floor} (target ≤ 1.5x): {verdict}"
                    )
            if op == "set 10 keys":
                base = ours.ratios.get(BASELINE)
                if base is not None:
                    speedup = 1 / base
                    verdict = "holds" if speedup >= 8 else "MISSES"
                    lines.append(
                        f"{backend}: set 10 keys {speedup:.1f}x faster than the per-key baseline "
                        f"(target ≥ 8x): {verdict}"
                    )
        for op in ("list_sessions of 50",):
            ours = by_key.get((backend, op, None, SM))
            many = by_key.get((backend, op, None, SM_X50))
            if ours is not None and many is not None:
                speedup = many.median_us / ours.median_us
                verdict = "holds" if speedup >= 20 else "MISSES"
                lines.append(
                    f"{backend}: list_sessions of 50 {speedup:.1f}x faster than 50 get_metadata "
                    f"(target ≥ 20x): {verdict}"
                )
    scaled = [
        r for r in results if r.sessions is not None and r.impl == SM and r.op == "find by equality"
    ]
    if scaled:
        smallest = min(scaled, key=lambda r: r.sessions or 0)
        largest = max(scaled, key=lambda r: r.sessions or 0)
        ratio = largest.median_us / smallest.median_us
        verdict = "holds" if ratio <= 2 else "MISSES"
        lines.append(
            f"postgres: find by equality at {largest.sessions:,} sessions is {ratio:.2f}x its time "
            f"at {smallest.sessions:,} (target ≤ 2x): {verdict}"
        )
        median_ms = largest.median_us / 1000
        verdict = "holds" if median_ms < 2 else "MISSES"
        lines.append(
            f"postgres: find by equality at {largest.sessions:,} sessions: "
            f"median {median_ms:.2f} ms "
            f"(target < 2 ms): {verdict}"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends",
        default="sqlite,postgres,mysql",
        help="comma-separated: sqlite, postgres, mysql (MariaDB or MySQL)",
    )
    parser.add_argument("--postgres-url", help="an async SQLAlchemy URL (postgresql+asyncpg://...)")
    parser.add_argument("--mysql-url", help="an async SQLAlchemy URL (mysql+aiomysql://...)")
    parser.add_argument(
        "--sessions", type=int, default=2000, help="sessions in the operations' data"
    )
    parser.add_argument(
        "--rounds", type=int, default=300, help="timed calls per implementation and operation"
    )
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--scale",
        default="10000,100000,1000000",
        help="PostgreSQL table sizes for the scaling runs, comma-separated; '' to skip",
    )
    parser.add_argument("--scale-rounds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="a tiny run, to check that it works")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.rounds, args.warmup, args.scale_rounds = 400, 5, 1, 5
        if "--scale" not in " ".join(argv if argv is not None else sys.argv):
            args.scale = "1000,2000"
    args.scale = [int(size) for size in args.scale.split(",") if size.strip()]
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = [name for name in args.backends if name not in FLOORS]
    if unknown:
        parser.error(f"unknown backends {', '.join(unknown)}: choose from {', '.join(FLOORS)}")
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_db.check_encoding()
    results: list[Result] = []
    floors: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="sessionmeta-bench-") as tmp:
        for backend in args.backends:
            results += await run_backend(backend, args, Path(tmp))
            floors[backend] = FLOORS[backend]
    args.out.mkdir(parents=True, exist_ok=True)
    for backend, floor_names in floors.items():
        references = [BASELINE, *floor_names]
        mine = [r for r in results if r.backend == backend]
        harness.add_ratios(mine, references)
        print(
            f"\n{backend}: median, min and max of {args.rounds} calls "
            f"(scaling: {args.scale_rounds})"
        )
        print(harness.format_table(mine, references))
    if not query_ops.available():
        print(
            "\nsessionmeta's find by range, list_sessions and get_many: not in this version "
            "(the query API); their baseline and floor are shown."
        )
    lines = check_targets(results, floors)
    print("\nTargets:")
    print("\n".join(f"  {line}" for line in lines))
    info = {
        "command": " ".join(sys.argv),
        "sessionmeta": sessionmeta.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "sessions": args.sessions,
        "rounds": args.rounds,
        "scale_rounds": args.scale_rounds,
        "query_api": query_ops.available(),
        "targets": lines,
    }
    harness.write_json(args.out / "results.json", results, info)
    print(f"\nwrote {args.out / 'results.json'}")
    if harness.write_chart(args.out / "scaling.png", results):
        print(f"wrote {args.out / 'scaling.png'}")
    async_floors = {backend: names[0] for backend, names in floors.items()}
    if harness.write_ratio_chart(args.out / "ratios.png", results, SM, async_floors):
        print(f"wrote {args.out / 'ratios.png'}")
    if getattr(args, "failed", False):
        print("the scaling runs failed: see the error above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
