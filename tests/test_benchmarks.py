"""The benchmark command keeps working: a tiny run on each backend, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
