"""A table of peers: sessionmeta against Google ADK, LangGraph's store and the Agents SDK.

    python benchmarks/peers.py                    # SQLite and PostgreSQL, 10,000 sessions
    python benchmarks/peers.py --quick            # a tiny run that only proves it works
    python benchmarks/peers.py --backends sqlite

On the same database (one SQLite file in WAL mode, and one PostgreSQL database), with the
same sessions of the benchmark model (``data.BenchMeta``: ten keys, a list among them),
each implementation loads the sessions through its own API, then updates 3 keys of one
session, reads one session's metadata, lists an owner's newest 50 sessions with their
metadata and finds sessions by tag and priority range. Where a library cannot run a
workload in the database, what its user would do instead is measured, and labelled "in
Python". The Agents SDK's own ``SQLAlchemySession`` is also timed per turn
(``add_items`` + ``get_items``) with and without sessionmeta's drop-in. Each round runs
every implementation once, in a rotating order, as ``harness.py`` does; each figure is
the median of the rounds (with min and max) and its ratio to sessionmeta's. Peak memory
(tracemalloc) of a 50-session listing too. Every library runs with its default settings:
on SQLite each leaves ``synchronous`` at SQLite's ``FULL``, so every commit syncs the log
(``--sqlite-synchronous NORMAL`` sets another on every connection of every library).

Google ADK runs in its own venv (``benchmarks/.venv-peers``, made by
``benchmarks/peers_venv.sh``: it pins OpenTelemetry below what ``.venv`` has) through
``peers_adk.py``, which times each call itself. Writes ``peers.json`` and ``peers.png``
into ``--out``. PostgreSQL is ``--postgres-url``, else ``SESSIONMETA_BENCH_POSTGRES_URL``,
else ``SESSIONMETA_TEST_POSTGRES_URL``, else the local ``test`` database; only the tables
``smpeer_*`` and the schemas ``smpeer_adk`` and ``smpeer_langgraph`` are created there,
and they are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Benchmark this checkout's code, whatever is installed.
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from harness import Result  # noqa: E402
from peers_impls import (  # noqa: E402
    ADK_SCHEMA,
    FLOOR_TABLES,
    LANGGRAPH_SCHEMA,
    SM_TABLES,
    AdkPeer,
    AgentsTurnPeer,
    LangGraphPeer,
    SessionmetaPeer,
    StoredRowsFloor,
)
from peers_workload import find_window, json_values, owner_of, read_index, session_id  # noqa: E402
from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

import sessionmeta  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SM = "sessionmeta"
SDK = "Agents SDK SQLAlchemySession"
TITLES = {
    "bulk": "bulk load of {sessions} sessions",
    "update3": "update 3 keys of one session",
    "read1": "read one session's metadata",
    "list50": "owner's newest 50, with metadata",
    "find": "find by tag and priority range",
    "turn": "Agents SDK turn (add_items + get_items)",
}
VENV_PEERS = HERE / ".venv-peers"


def postgres_url(given: str | None) -> str:
    return (
        given
        or os.environ.get("SESSIONMETA_BENCH_POSTGRES_URL")
        or os.environ.get("SESSIONMETA_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL
    )


def title(op: str, sessions: int) -> str:
    return TITLES[op].format(sessions=f"{sessions:,}")


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def adk_python(given: str | None) -> str | None:
    """A Python that has google-adk: this one, else benchmarks/.venv-peers'."""
    if given:
        return given
    if installed("google.adk"):
        return sys.executable
    candidate = VENV_PEERS / "bin" / "python"
    return str(candidate) if candidate.exists() else None


def sqlite_setting(synchronous: str | None) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.close()

    return on_connect


async def measure(
    backend: str,
    op: str,
    peers: Sequence[Any],
    *,
    rounds: int,
    warmup: int,
    sessions: int,
    prepare: Callable[[Any], Awaitable[None]] | None = None,
    index_of: Callable[[int], int] = lambda index: index,
) -> list[Result]:
    """Every implementation once per round, in a rotating order (as harness.measure); each
    call's time is what the implementation reports (the ADK worker times its own)."""
    timings: dict[str, list[float]] = {peer.name: [] for peer in peers}
    for round_index in range(-warmup, rounds):
        shift = round_index % len(peers)
        for peer in [*peers[shift:], *peers[:shift]]:
            if prepare is not None:
                await prepare(peer)
            elapsed, _ = await peer.run(op, index_of(round_index + warmup))
            if round_index >= 0:
                timings[peer.name].append(elapsed)
    return [
        Result(
            backend,
            title(op, sessions),
            peer.name,
            statistics.median(timings[peer.name]),
            min(timings[peer.name]),
            max(timings[peer.name]),
            len(timings[peer.name]),
            note=peer.how[op],
        )
        for peer in peers
    ]


async def check_answers(peers: Sequence[Any], sessions: int) -> list[str]:
    """Untimed: every implementation returns what the data says, before anything is timed."""
    problems = []
    for i in (0, 1, 7):
        index = read_index(i, sessions)
        low, high = find_window(i, sessions)
        expected_find = sorted(session_id(k) for k in range(low, high) if k % 2)
        owner = owner_of(index)
        owned = sum(1 for k in range(sessions) if owner_of(k) == owner)
        for peer in peers:
            _, read = await peer.run("read1", i, check=True)
            if read != json_values(index):
                problems.append(f"{peer.name}: read of {session_id(index)} gave {read}")
            _, listed = await peer.run("list50", i, check=True)
            if len(listed) != min(50, owned) or any(
                owner_of(int(sid[1:])) != owner for sid in listed
            ):
                problems.append(f"{peer.name}: listing of {owner} gave {listed}")
            _, found = await peer.run("find", i, check=True)
            if found != expected_find:
                problems.append(f"{peer.name}: find [{low}, {high}) gave {found}")
    return problems


async def prepare_postgres(engine: AsyncEngine, create: bool) -> None:
    async with engine.begin() as connection:
        tables = ", ".join((*SM_TABLES, *FLOOR_TABLES))
        await connection.execute(text(f"DROP TABLE IF EXISTS {tables} CASCADE"))
        for schema in (ADK_SCHEMA, LANGGRAPH_SCHEMA):
            await connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            if create:
                await connection.execute(text(f"CREATE SCHEMA {schema}"))


async def run_backend(
    backend: str, args: argparse.Namespace, workdir: Path, info: dict[str, Any]
) -> tuple[list[Result], list[dict[str, Any]]]:
    sessions = args.sessions
    postgres = backend == "postgres"
    if postgres:
        url = postgres_url(args.postgres_url)
        langgraph_url = (
            make_url(url)
            .set(drivername="postgresql", query={"options": f"-csearch_path={LANGGRAPH_SCHEMA}"})
            .render_as_string(hide_password=False)
        )
    else:
        path = workdir / "peers.sqlite3"
        with sqlite3.connect(path) as connection:
            # WAL, set once in the file: readers never wait on a writer.
            connection.execute("PRAGMA journal_mode = WAL")
        connection.close()
        url = f"sqlite+aiosqlite:///{path}"
        langgraph_url = str(path)
    engine = create_async_engine(url)
    if not postgres and args.sqlite_synchronous:
        event.listen(engine.sync_engine, "connect", sqlite_setting(args.sqlite_synchronous))
    results: list[Result] = []
    memory: list[dict[str, Any]] = []
    peers: list[Any] = []
    turns: list[Any] = []
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"  {backend}: {message} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    try:
        if postgres:
            await prepare_postgres(engine, create=True)
            async with engine.connect() as connection:
                server = (await connection.execute(text("SHOW server_version"))).scalar()
            info["postgresql"] = server
        else:
            info["sqlite"] = sqlite3.sqlite_version
        ours = SessionmetaPeer(engine, sessions, postgres)
        info["sessionmeta bulk"] = ours.how["bulk"]
        await ours.create_tables()
        peers.append(ours)
        # Timed on the bulk load only: what the rows alone cost in sessionmeta's schema.
        floor = StoredRowsFloor(engine, postgres)
        await floor.create_tables()
        if "langgraph" in args.peers:
            if not installed("langgraph.store"):
                info.setdefault("skipped", []).append("LangGraph: not installed (bench extra)")
            else:
                langgraph = LangGraphPeer(
                    sessions, postgres, langgraph_url, args.sqlite_synchronous
                )
                await langgraph.start()
                peers.append(langgraph)
        if "adk" in args.peers:
            python = adk_python(args.adk_python)
            if python is None:
                info.setdefault("skipped", []).append(
                    "Google ADK: no venv with google-adk; run bash benchmarks/peers_venv.sh"
                )
            else:
                adk = AdkPeer(python, url, sessions, args.sqlite_synchronous)
                peers.append(adk)
                await adk.start()
                info["google-adk"] = adk.versions.get("google-adk")
        if "agents" in args.peers:
            if not installed("agents"):
                info.setdefault("skipped", []).append("Agents SDK: not installed (agents extra)")
            else:
                turns = [
                    AgentsTurnPeer(engine, sessions, drop_in=False),
                    AgentsTurnPeer(engine, sessions, drop_in=True),
                ]
                await turns[1].create_tables()
        progress(", ".join(peer.name for peer in peers) + " ready")

        async def reset(peer: Any) -> None:
            await peer.reset()

        # A small untimed load first, so that no first round pays for cold caches.
        for peer in [*peers, floor]:
            await peer.reset()
            await peer.run("bulk", min(100, sessions))
        results += await measure(
            backend,
            "bulk",
            [*peers, floor],
            rounds=args.bulk_rounds,
            warmup=0,
            sessions=sessions,
            prepare=reset,
            index_of=lambda _: sessions,
        )
        progress(title("bulk", sessions))
        # Each implementation's last load is the data of everything that follows.
        for peer in peers:
            await peer.after_load()
        problems = await check_answers(peers, sessions)
        if problems:
            info.setdefault("check failures", []).extend(f"{backend}: {p}" for p in problems)
            for problem in problems:
                print(f"  {backend}: WRONG ANSWER: {problem}", file=sys.stderr)
        for op, rounds, warmup in (
            ("read1", args.rounds, args.warmup),
            ("list50", args.rounds, args.warmup),
            ("find", args.find_rounds, min(args.warmup, 2)),
            ("update3", args.rounds, args.warmup),
        ):
            results += await measure(
                backend, op, peers, rounds=rounds, warmup=warmup, sessions=sessions
            )
            progress(title(op, sessions))
        if turns:
            for turn in turns:
                _, count = await turn.run("turn", -1, check=True)
                if count < 2:
                    info.setdefault("check failures", []).append(f"{turn.name}: {count} items")
            results += await measure(
                backend,
                "turn",
                turns,
                rounds=args.rounds,
                warmup=args.warmup,
                sessions=sessions,
            )
            progress(title("turn", sessions))
        for peer in peers:
            peaks = [await peer.memory("list50", i) for i in range(args.memory_rounds)]
            memory.append(
                {
                    "backend": backend,
                    "impl": peer.name,
                    "op": title("list50", sessions),
                    "peak_bytes": statistics.median(peaks),
                    "peaks": peaks,
                    "note": peer.how["list50"],
                }
            )
        progress("memory of a 50-session listing")
    finally:
        for peer in peers:
            try:
                await peer.close()
            except Exception:
                traceback.print_exc()
        if postgres:
            await prepare_postgres(engine, create=False)
        await engine.dispose()
    return results, memory


def add_ratios(results: list[Result], memory: list[dict[str, Any]]) -> None:
    """Each median over sessionmeta's for the same operation and backend (a turn's over
    the plain SDK session's)."""
    by_key = {(r.backend, r.op, r.impl): r for r in results}
    for result in results:
        reference = SDK if result.op == TITLES["turn"] else SM
        other = by_key.get((result.backend, result.op, reference))
        if other is not None and result.impl != reference:
            result.ratios[reference] = result.median_us / other.median_us
    peaks = {(m["backend"], m["impl"]): m["peak_bytes"] for m in memory}
    for entry in memory:
        ours = peaks.get((entry["backend"], SM))
        if ours and entry["impl"] != SM:
            entry["ratio"] = entry["peak_bytes"] / ours


def _ms(us: float) -> str:
    ms = us / 1000
    if ms >= 1000:
        return f"{ms:,.0f}"
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    lines = [headers, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    text_lines = []
    for number, line in enumerate(lines):
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        text_lines.append("  ".join(cells).rstrip())
        if number == 0:
            text_lines.append("  ".join("-" * width for width in widths))
    return "\n".join(text_lines)


def format_results(results: list[Result]) -> str:
    rows = []
    for r in results:
        ratio = next(iter(r.ratios.values()), None)
        rows.append(
            [
                r.backend,
                r.op,
                r.impl,
                _ms(r.median_us),
                _ms(r.min_us),
                _ms(r.max_us),
                "" if ratio is None else f"{ratio:.2f}",
                r.note,
            ]
        )
    headers = ["backend", "operation", "implementation", "median ms", "min", "max", "x ref", "how"]
    return _table(headers, rows, {3, 4, 5, 6})


def format_memory(memory: list[dict[str, Any]]) -> str:
    rows = [
        [
            m["backend"],
            m["impl"],
            f"{m['peak_bytes'] / 1024:,.0f}",
            f"{m['ratio']:.2f}" if "ratio" in m else "",
            m["note"],
        ]
        for m in memory
    ]
    return _table(["backend", "implementation", "peak KiB", "x ref", "how"], rows, {2, 3})


def _hatch(note: str) -> str | None:
    if note.startswith("in Python"):
        return "//"
    if note.startswith("partly in Python"):
        return ".."
    return None


def write_chart(path: Path, results: list[Result], memory: list[dict[str, Any]]) -> bool:
    """Each peer's median over sessionmeta's per operation, one panel per backend; hatched
    where the peer does the work in Python."""
    try:
        import matplotlib
    except ImportError:
        print("no chart: matplotlib is not installed (the bench extra)", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    backends = sorted({r.backend for r in results}, key=lambda b: (b != "sqlite", b))
    if not backends:
        return False
    memory_op = "peak memory of the 50-session listing"
    groups = [*dict.fromkeys(r.op for r in results), memory_op]
    impls = list(dict.fromkeys(r.impl for r in results if r.ratios))
    colours = dict(zip(impls, plt.get_cmap("tab10").colors, strict=False))
    bars: dict[tuple[str, str], list[tuple[str, float, str | None]]] = {}
    for r in results:
        if r.ratios:
            ratio = next(iter(r.ratios.values()))
            bars.setdefault((r.backend, r.op), []).append((r.impl, ratio, _hatch(r.note)))
    for m in memory:
        if "ratio" in m:
            key = (m["backend"], memory_op)
            bars.setdefault(key, []).append((m["impl"], m["ratio"], _hatch(m["note"])))
    ratios = [ratio for group in bars.values() for _, ratio, _ in group]
    if not ratios:
        return False
    figure, axes = plt.subplots(
        1, len(backends), figsize=(8 * len(backends), 6.5), squeeze=False, sharey=True
    )
    width = 0.8 / max(len(impls), 1)
    for axis, backend in zip(axes[0], backends, strict=True):
        for position, group in enumerate(groups):
            here = bars.get((backend, group), [])
            for slot, (impl, ratio, hatch) in enumerate(here):
                x = position + (slot - (len(here) - 1) / 2) * width
                axis.bar(
                    x,
                    ratio,
                    width * 0.9,
                    color=colours.get(impl),
                    hatch=hatch,
                    edgecolor="black",
                    linewidth=0.5,
                )
                axis.annotate(
                    f"{ratio:.3g}" if ratio < 10 else f"{ratio:,.0f}",
                    (x, ratio),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        axis.axhline(1, color="black", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_ylim(min(ratios) / 2, max(ratios) * 4)
        axis.set_xticks(range(len(groups)))
        axis.set_xticklabels(groups, rotation=25, ha="right", fontsize=8)
        axis.set_title("PostgreSQL" if backend == "postgres" else "SQLite (WAL)", fontsize=10)
        axis.set_ylabel("median over sessionmeta's (log); above 1: slower or bigger")
        axis.grid(True, axis="y", which="both", alpha=0.3)
    handles = [Patch(facecolor=colours[impl], edgecolor="black", label=impl) for impl in impls]
    handles += [
        Patch(facecolor="white", edgecolor="black", hatch="//", label="in Python"),
        Patch(facecolor="white", edgecolor="black", hatch="..", label="partly in Python"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    figure.suptitle(
        "Peers on the same database, each over sessionmeta (the drop-in's turn: over the "
        "Agents SDK's own session)",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.06, 1, 0.97))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def versions() -> dict[str, str]:
    found = {"sessionmeta": sessionmeta.__version__}
    for name in (
        "sqlalchemy",
        "pydantic",
        "asyncpg",
        "aiosqlite",
        "psycopg",
        "openai-agents",
        "langgraph-checkpoint",
        "langgraph-checkpoint-postgres",
        "langgraph-checkpoint-sqlite",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def checkout() -> str:
    """The commit measured, and whether src/ had changes not committed."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "../src"],
            cwd=HERE,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' with uncommitted changes in src/' if dirty else ''}" or "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres"
    )
    parser.add_argument("--postgres-url", help="an async SQLAlchemy URL (postgresql+asyncpg://...)")
    parser.add_argument(
        "--peers",
        default="langgraph,adk,agents",
        help="comma-separated: langgraph, adk, agents (sessionmeta always runs)",
    )
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200, help="rounds of the fast operations")
    parser.add_argument(
        "--find-rounds", type=int, default=30, help="rounds of the find (peers load everything)"
    )
    parser.add_argument("--bulk-rounds", type=int, default=3, help="rounds of the bulk load")
    parser.add_argument("--memory-rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--sqlite-synchronous",
        choices=["OFF", "NORMAL", "FULL", "EXTRA"],
        help="set on every SQLite connection of every library (default: left as they leave it)",
    )
    parser.add_argument("--adk-python", help="a Python with google-adk (default: .venv-peers')")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="a tiny run, to check that it works")
    parser.add_argument(
        "--from-bench",
        action="store_true",
        help="called by scripts/bench.sh with run.py's arguments: keep --quick, --backends, "
        "--postgres-url and --out, ignore the rest",
    )
    given = sys.argv[1:] if argv is None else argv
    args, unknown = parser.parse_known_args(given)
    if args.from_bench:
        shared = {"quick", "backends", "postgres_url", "out", "from_bench"}
        defaults = parser.parse_args([])
        for name, value in vars(defaults).items():
            if name not in shared:
                setattr(args, name, value)
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.quick:
        args.sessions, args.rounds, args.find_rounds, args.bulk_rounds = 400, 5, 3, 1
        args.warmup, args.memory_rounds = 1, 1
    if args.sessions < 400 or args.sessions % 8:
        parser.error("--sessions must be a multiple of 8, at least 400")
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if args.from_bench:
        # run.py also measures MariaDB/MySQL; the peers' table has no MariaDB column.
        args.backends = [name for name in args.backends if name in ("sqlite", "postgres")]
    unknown = [name for name in args.backends if name not in ("sqlite", "postgres")]
    if unknown:
        parser.error(f"unknown backends {', '.join(unknown)}: choose from sqlite, postgres")
    args.peers = {name.strip() for name in args.peers.split(",") if name.strip()}
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[Result] = []
    memory: list[dict[str, Any]] = []
    info: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "sessions": args.sessions,
        "rounds": args.rounds,
        "find_rounds": args.find_rounds,
        "bulk_rounds": args.bulk_rounds,
        "warmup": args.warmup,
        "checkout": checkout(),
        "versions": versions(),
        "sqlite settings": [
            "PRAGMA journal_mode = WAL (in the file)",
            f"PRAGMA synchronous = {args.sqlite_synchronous}"
            if args.sqlite_synchronous
            else "synchronous: each library's default (SQLite's FULL for all three)",
        ],
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="sessionmeta-peers-") as tmp:
        for backend in args.backends:
            backend_info: dict[str, Any] = {}
            info[backend] = backend_info
            try:
                got, peaks = await run_backend(backend, args, Path(tmp), backend_info)
            except Exception:
                traceback.print_exc()
                failed = True
                continue
            results += got
            memory += peaks
            failed = failed or bool(backend_info.get("check failures"))
    add_ratios(results, memory)
    for backend in args.backends:
        mine = [r for r in results if r.backend == backend]
        if not mine:
            continue
        print(
            f"\n{backend}: median, min and max of {args.rounds} rounds ({args.find_rounds} for "
            f"the find, {args.bulk_rounds} for the bulk load); x ref: the median over "
            "sessionmeta's (a turn's: over the plain SDK session's)"
        )
        print(format_results(mine))
        for note in info[backend].get("skipped", []):
            print(f"  skipped: {note}")
    if memory:
        print(f"\npeak memory (tracemalloc, median of {args.memory_rounds}) of one listing:")
        print(format_memory(memory))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "peers.json"
    out.write_text(
        json.dumps(
            {"info": info, "results": [asdict(r) for r in results], "memory": memory}, indent=2
        )
        + "\n"
    )
    print(f"\nwrote {out}")
    if results and write_chart(args.out / "peers.png", results, memory):
        print(f"wrote {args.out / 'peers.png'}")
    if failed:
        print("the peers run failed or got a wrong answer: see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
