"""The benchmark command keeps working: a tiny run on SQLite, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_command_runs_and_writes_its_results(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/run.py",
            "--quick",
            "--backends",
            "sqlite",
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
    measured = {(row["op"], row["impl"]) for row in results}
    for op in ("set 10 keys", "get all 10 keys", "get 2 keys", "find by equality"):
        for impl in ("sessionmeta", "per-key baseline", "raw (aiosqlite)", "raw (sqlite3)"):
            assert (op, impl) in measured
    ours = next(r for r in results if r["op"] == "set 10 keys" and r["impl"] == "sessionmeta")
    assert ours["ratios"]["raw (aiosqlite)"] > 0
