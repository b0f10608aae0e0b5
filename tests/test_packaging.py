"""The package as the index shows it and a user installs it: its metadata, its extras,
the DDL it prints, and a README whose links work outside the repository."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "https://github.com/sessionmeta/sessionmeta"
USER_EXTRAS = {"postgres", "psycopg", "mysql", "agents", "fastapi", "web", "encryption"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel`` builds from this checkout, outside it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", out, ROOT],
        check=True,
        cwd=out,
        timeout=300,
    )
    (built,) = out.glob("sessionmeta-*.whl")
    return built


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def test_the_index_page_has_urls_authors_and_classifiers(metadata: Message) -> None:
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert urls["Source"] == REPOSITORY
    assert urls["Changelog"] == f"{REPOSITORY}/blob/main/CHANGELOG.md"
    assert metadata["Author"] and metadata["License-Expression"] == "MIT"
    classifiers = metadata.get_all("Classifier", [])
    assert "Typing :: Typed" in classifiers
    supported = {c.rsplit(" :: ", 1)[1] for c in classifiers if re.search(r":: 3\.\d+$", c)}
    oldest = metadata["Requires-Python"].removeprefix(">=")
    assert oldest in supported


def test_only_the_extras_users_install_are_offered(metadata: Message) -> None:
    # Development and benchmark tools are dependency groups, not extras.
    assert set(metadata.get_all("Provides-Extra", [])) == USER_EXTRAS


def test_every_requirement_has_a_tested_lower_bound(metadata: Message) -> None:
    # CI's minimum-versions job pins each one at its >= bound (scripts/minimum_versions.py).
    for requirement in metadata.get_all("Requires-Dist", []):
        assert ">=" in requirement.split(";")[0], requirement


def test_the_installed_wheel_prints_the_schemas(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", site, wheel],
        check=True,
        timeout=300,
    )
    for dialect in ("postgresql", "mysql", "sqlite"):
        # The installed copy, not this checkout's src/, answers (its dependencies are ours).
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, sessionmeta.cli as c; print(c.__file__); "
                "sys.argv = ['sessionmeta', 'ddl', '--dialect', sys.argv[1]]; sys.exit(c.main())",
                dialect,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PYTHONPATH": str(site), "PATH": ""},
            check=True,
        )
        module, ddl = result.stdout.split("\n", 1)
        assert Path(module).is_relative_to(site)
        schema = (ROOT / "schemas" / f"{dialect}.sql").read_text()
        assert schema.endswith(ddl) and "CREATE TABLE agent_sessions_metadata " in ddl


def markdown_links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("document", ["README.md", "CHANGELOG.md"])
def test_links_work_outside_the_repository(document: str) -> None:
    # The index shows these pages without the repository: a relative link would break there.
    links = markdown_links((ROOT / document).read_text())
    assert links
    for link in links:
        assert link.startswith("https://"), f"{document}: {link} is relative"
        if link.startswith(f"{REPOSITORY}/blob/main/"):
            path = link.removeprefix(f"{REPOSITORY}/blob/main/").split("#")[0]
            assert (ROOT / path).is_file(), f"{document}: {link} names no file of the repository"
        elif link.startswith(f"{REPOSITORY}/tree/main/"):
            path = link.removeprefix(f"{REPOSITORY}/tree/main/").split("#")[0]
            assert (ROOT / path).is_dir(), f"{document}: {link} names no directory"
