"""The benchmark commands keep working: tiny runs on each backend, end to end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {
    "sqlite": ("raw (aiosqlite)", "raw (sqlite3)"),
    "postgres": ("raw (asyncpg)",),
    "mysql": ("raw (aiomysql)",),
}


def test_benchmark_command_runs_and_writes_its_results(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    # The server's own URL (the sqlite one is ignored: run.py makes its own file), and
    # no scaling runs: they take minutes.
    urls = ["--postgres-url", db_url] if backend == "postgres" else ["--mysql-url", db_url]
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/run.py",
            "--quick",
            "--backends",
            backend,
            "--scale",
            "",
            *(urls if backend != "sqlite" else []),
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Targets:" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    measured = {(row["backend"], row["op"], row["impl"]) for row in results}
    for op in ("set 10 keys", "get all 10 keys", "get 2 keys", "find by equality"):
        for impl in ("sessionmeta", "per-key baseline", *FLOORS[backend]):
            assert (backend, op, impl) in measured
    ours = next(r for r in results if r["op"] == "set 10 keys" and r["impl"] == "sessionmeta")
    assert ours["ratios"][FLOORS[backend][0]] > 0
    assert f"{backend}: set 10 keys at" in result.stdout


def test_write_growth_command_measures_each_size_and_drops_its_tables(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    urls = {"postgres": ["--postgres-url", db_url], "mysql": ["--mysql-url", db_url]}
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/write_growth.py",
            "--quick",
            "--backends",
            backend,
            "--sizes",
            "100,300",
            *urls.get(backend, []),
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    steps = json.loads((tmp_path / "write_growth.json").read_text())["steps"]
    assert [step["sessions"] for step in steps] == [100, 300]
    for step in steps:
        measured = {row["impl"] for row in step["results"]}
        for op in ("set existing", "set new", "get"):
            assert {f"{op}, pooled", f"{op}, fresh pool"} <= measured
    assert "set existing (pooled)" in result.stdout
    if backend != "sqlite":
        assert [name for name in asyncio.run(table_names(db_url)) if "smbench_grow" in name] == []


async def table_names(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            names: list[str] = await connection.run_sync(
                lambda sync: inspect(sync).get_table_names()
            )
            return names
    finally:
        await engine.dispose()
