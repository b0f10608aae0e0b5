"""Every Python example in the README runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md"]


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
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{document} line {line}:\n{result.stderr}"


def test_quickstart_example_is_the_readme_quickstart() -> None:
    quickstart = (ROOT / "examples/quickstart.py").read_text()
    body = quickstart.split('"""', 2)[2].lstrip()
    assert any(code == body for _, _, code in EXAMPLES)
