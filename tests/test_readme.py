"""Every Python example in the README, docs/encryption.md and docs/expiry.md runs as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sessionmeta

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", "docs/encryption.md", "docs/expiry.md"]
SRC = Path(sessionmeta.__file__).resolve().parents[1]
# Runs Markdown Python blocks with the OpenAI API answered locally (no network, no key).
OFFLINE_RUNNER = ROOT / "tests" / "agents_sdk" / "run_markdown.py"


def python_blocks(document: str) -> list[tuple[str, int, str]]:
    text = (ROOT / document).read_text()
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text, flags=re.DOTALL):
        line = text[: match.start()].count("\n") + 1
        blocks.append((document, line, match.group(1)))
    return blocks


EXAMPLES = [block for document in DOCUMENTS for block in python_blocks(document)]


@pytest.mark.parametrize(
    ("document", "line", "code"), EXAMPLES, ids=[f"{d}:{n}" for d, n, _ in EXAMPLES]
)
def test_example_runs(document: str, line: int, code: str, tmp_path: Path) -> None:
    if "Encrypted()" in code:
        pytest.importorskip("cryptography", reason="the example needs the encryption extra")
    if "from agents import" in code:
        pytest.importorskip("agents", reason="the Agents SDK example needs the agents extra")
        page = tmp_path / "example.md"
        page.write_text(f"```python\n{code}```\n")
        command = [sys.executable, "-W", "error", str(OFFLINE_RUNNER), str(page)]
    else:
        script = tmp_path / "example.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=False,
    )
    assert result.returncode == 0, f"{document} line {line}:\n{result.stderr}"
    if command[-1].endswith(".md"):
        assert json.loads(result.stdout)[0]["printed"].startswith("Echo: Hello!")


def test_command_line_transcript_runs(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    commands = [
        line.removeprefix("$ ").split("  #")[0].strip()
        for line in text.splitlines()
        if line.startswith(("$ sessionmeta", "$ export SESSIONMETA"))
        and "priority=urgent" not in line  # shown failing on purpose
        and not line.startswith("$ sessionmeta serve")  # serves until stopped
    ]
    assert len(commands) >= 5
    executable = shutil.which("sessionmeta", path=str(Path(sys.executable).parent))
    assert executable is not None, "the sessionmeta console script is not installed"
    script = "set -e\n" + "\n".join(commands) + "\n"
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{Path(executable).parent}:{os.environ['PATH']}"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"billing"' in result.stdout and '"vip"' in result.stdout


def test_quickstart_example_is_the_readme_quickstart() -> None:
    quickstart = (ROOT / "examples/quickstart.py").read_text()
    body = quickstart.split('"""', 2)[2].lstrip()
    assert any(code == body for _, _, code in EXAMPLES)
