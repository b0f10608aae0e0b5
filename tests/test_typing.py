"""mypy sees the user's model through the store and the query API: misuse is reported statically.

Each usage file marks with ``# E`` every line mypy must report, and no other line may be reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parent.parent
USAGES = ["typing_usage.py", "typing_queries.py"]


@pytest.mark.parametrize("usage_name", USAGES)
def test_mypy_reports_misuse_and_only_misuse(usage_name: str) -> None:
    usage = Path(__file__).with_name(usage_name)
    stdout, stderr, _ = api.run(
        ["--config-file", str(ROOT / "mypy.ini"), "--no-incremental", str(usage)]
    )
    reported = {
        int(line.split(":")[1])
        for line in stdout.splitlines()
        if line.split(":")[0].endswith(usage.name) and ": error:" in line
    }
    lines = usage.read_text().splitlines()
    expected = {number for number, line in enumerate(lines, start=1) if line.endswith("# E")}
    assert reported == expected, stdout + stderr
