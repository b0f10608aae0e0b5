"""mypy sees query results typed by the user's model, and reports misuse of the filter API."""

from __future__ import annotations

from pathlib import Path

from mypy import api

USAGE = Path(__file__).with_name("typing_queries.py")
ROOT = Path(__file__).resolve().parent.parent


def test_mypy_reports_query_misuse_and_only_misuse() -> None:
    stdout, stderr, _ = api.run(
        ["--config-file", str(ROOT / "mypy.ini"), "--no-incremental", str(USAGE)]
    )
    reported = {
        int(line.split(":")[1])
        for line in stdout.splitlines()
        if line.split(":")[0].endswith(USAGE.name) and ": error:" in line
    }
    lines = USAGE.read_text().splitlines()
    expected = {number for number, line in enumerate(lines, start=1) if line.endswith("# E")}
    assert reported == expected, stdout + stderr
