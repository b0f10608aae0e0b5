"""benchmarks/serve_list.py keeps working: a quick run on PostgreSQL, end to end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from tests.test_benchmarks import table_names

ROOT = Path(__file__).resolve().parents[2]
# The benchmark loads with PostgreSQL's COPY.
BACKENDS = ("postgres",)


def test_serve_list_benchmark_times_each_page_and_drops_its_tables(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/serve_list.py",
            "--quick",
            "--postgres-url",
            db_url,
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
    run = json.loads((tmp_path / "serve_list.json").read_text())
    assert run["sessions"] == 10_000
    assert set(run["pages"]) == {
        "owner + tag, newest first",
        "owner, by priority",
        "tag, newest first",
        "everything, by id",
    }
    for figures in run["pages"].values():
        assert 0 < figures["request"]["min_ms"] <= figures["request"]["median_ms"]
    assert "owner + tag, newest first" in result.stdout
    names = asyncio.run(table_names(db_url))
    assert [name for name in names if name.startswith("smbench_serve")] == []
