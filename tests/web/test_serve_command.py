"""`sessionmeta serve` refuses what it cannot serve safely, as one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import ROOT, cli_env

MODEL = "tests.web.models:Ticket"


def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionmeta", "serve", "--model", MODEL, *args],
        cwd=ROOT,
        env=cli_env(None, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "::", "example.com"])
def test_another_address_needs_a_token(host: str, tmp_path: Path) -> None:
    result = serve("--host", host, "--url", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.returncode == 2
    assert result.stderr.startswith(f"sessionmeta: error: --host {host} serves other machines")
    assert "--token" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_missing_database_is_refused_before_serving(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    for extra in ([], ["--host", "0.0.0.0", "--token", "t"]):
        result = serve("--url", f"sqlite:///{missing}", *extra)
        assert result.returncode == 2 and "no database file" in result.stderr
    result = serve("--url", f"sqlite:///{missing}", "--host", "0.0.0.0", SESSIONMETA_TOKEN="t")
    assert result.returncode == 2 and "no database file" in result.stderr
    assert not missing.exists()


def test_the_help_names_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sessionmeta", "serve", "--help"],
        cwd=ROOT,
        env=cli_env(None),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for option in ("--host", "--port", "--token", "--read-only", "--messages-table"):
        assert option in result.stdout
