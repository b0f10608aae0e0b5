"""The Agents SDK stays optional: ``import sessionmeta`` never imports it.

Each check runs in a fresh interpreter, with the SDK hidden by an import hook
where the check is about it being missing (it stays installed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import sessionmeta

SRC = Path(sessionmeta.__file__).resolve().parents[1]

HIDE_AGENTS = """
import importlib.abc, sys

class HideAgents(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "agents" or name.startswith("agents."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideAgents())
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_import_sessionmeta_never_imports_the_sdk() -> None:
    result = run_python(
        """
        import importlib, pkgutil, sys
        import sessionmeta
        for module in pkgutil.iter_modules(sessionmeta.__path__, "sessionmeta."):
            if module.name != "sessionmeta.agents":
                importlib.import_module(module.name)
        loaded = sorted(name for name in sys.modules if name.split(".")[0] == "agents")
        print(loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_sessionmeta_works_without_the_sdk() -> None:
    result = run_python(
        HIDE_AGENTS
        + """
import asyncio
import sessionmeta

class Meta(sessionmeta.SessionMeta):
    title: str | None = None

async def main() -> None:
    async with sessionmeta.MetadataStore.from_url(
        Meta, "sqlite+aiosqlite://", create_tables=True
    ) as store:
        await store.bind("s").set_metadata({"title": "no SDK needed"})
        print((await store.bind("s").get_metadata()).title)

asyncio.run(main())
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no SDK needed"


def test_the_drop_in_without_the_sdk_names_the_extra() -> None:
    result = run_python(
        HIDE_AGENTS
        + """
try:
    import sessionmeta.agents
except ImportError as exc:
    print(exc)
else:
    print("imported")
"""
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'sessionmeta[agents]'" in result.stdout
