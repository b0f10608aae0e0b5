"""docs/unique.md: every Python block runs as written and prints what the page says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sessionmeta

from .run_markdown import python_blocks

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "unique.md"
RUNNER = Path(__file__).with_name("run_markdown.py")
SRC = Path(sessionmeta.__file__).resolve().parents[1]


def test_every_python_block_runs_and_prints_what_it_shows(tmp_path: Path) -> None:
    blocks = python_blocks(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) == 3
    result = subprocess.run(
        [sys.executable, "-W", "error", str(RUNNER), str(PAGE)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the page's SQLite files land here
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    ran = json.loads(result.stdout)
    assert [block["line"] for block in ran] == [line for line, _, _ in blocks]
    printed = [block for block in ran if block["expected"] is not None]
    assert len(printed) == 2
    for block in printed:
        assert block["printed"] == block["expected"], f"{PAGE.name}:{block['line']}"
