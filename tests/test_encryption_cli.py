"""The command line with encrypted fields: keys from --keys-file or $SESSIONMETA_KEYS,
show/set/find/list/check decrypting and finding by equality, and `sessionmeta rekey`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("cryptography", reason="encrypted fields need the encryption extra")

from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta.core.encryption import parse_envelope

from .test_cli import Result, assert_refused, run
from .test_encryption import keys, raw_rows

MODEL = "tests.encrypted_models:Contact"


@pytest.fixture
def url(engine: AsyncEngine, db_url: str) -> str:
    return db_url


async def cli(url: str, *args: str, keys_json: str = "") -> Result:
    """The command with the encrypted model, and the keys in $SESSIONMETA_KEYS if given."""
    return await run(*args, url=url, SESSIONMETA_MODEL=MODEL, SESSIONMETA_KEYS=keys_json)


async def test_commands_read_and_find_with_a_keys_file(
    url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys("k1").to_json())
    assert (await run("init", url=url)).code == 0
    written = await cli(
        url, "set", "s1", "email=ada@example.org", "age=36", "--keys-file", str(keys_file)
    )
    assert written.code == 0, written
    assert "ada@example.org" in written.out
    assert "ada@example.org" not in str(await raw_rows(engine))
    # The keys as JSON text in the environment serve as well.
    old = keys("k1").to_json()
    shown = await cli(url, "show", "s1", "--json", keys_json=old)
    assert shown.code == 0, shown
    assert json.loads(shown.out)["metadata"]["email"] == "ada@example.org"
    found = await cli(url, "find", "email=ada@example.org", "--json", keys_json=old)
    assert json.loads(found.out)["sessions"] == ["s1"]
    listed = await cli(url, "list", "-c", "email,age", keys_json=old)
    assert "ada@example.org" in listed.out and "36" in listed.out
    assert_refused(await cli(url, "find", "age>3", keys_json=old), "Encrypted()", "'age'")
    assert (await cli(url, "check", "--no-progress", keys_json=old)).code == 0
    # Rotation: a new current key beside the old one, then rekey.
    rekeyed = await cli(url, "rekey", "--json", keys_json=keys("k1", "k2").to_json())
    assert rekeyed.code == 0, rekeyed
    assert json.loads(rekeyed.out)["rewritten"] == 2
    envelopes = [parse_envelope(row[2]) for row in await raw_rows(engine)]
    assert {envelope.key_id for envelope in envelopes if envelope is not None} == {"k2"}
    shown = await cli(url, "show", "s1", "--json", keys_json=keys("k2").to_json())
    assert json.loads(shown.out)["metadata"]["age"] == 36


async def test_missing_or_bad_keys_are_refused(url: str, tmp_path: Path) -> None:
    assert (await run("init", url=url)).code == 0
    assert_refused(await cli(url, "show", "s1"), "Encrypted()", "keys=EncryptionKeys")
    missing = str(tmp_path / "none.json")
    assert_refused(
        await cli(url, "show", "s1", "--keys-file", missing), "cannot read the keys file"
    )
    assert_refused(await cli(url, "show", "s1", keys_json="{}"), "$SESSIONMETA_KEYS")
