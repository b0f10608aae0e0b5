"""The raw tables show no plaintext: 1,000 encrypted values written, then the SQLite file
(and its write-ahead log), a ``pg_dump`` and a ``mysqldump`` searched for every one."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from pathlib import Path

import pytest

pytest.importorskip("cryptography", reason="encrypted fields need the encryption extra")

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore

from .conftest import IN_CI
from .encrypted_models import Contact
from .test_encryption import keys

VALUES = 1_000


def needles(value: str) -> list[bytes]:
    """The forms a value could take in a file or a dump: as is, JSON-escaped (ASCII or not)."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return [form.encode("utf-8") for form in forms]


def _file_and_log(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def database_bytes(backend: str, db_url: str) -> bytes:
    """Everything the database holds, as a file or as its dump tool prints it."""
    url = make_url(db_url)
    if backend == "sqlite":
        assert url.database is not None
        return await asyncio.to_thread(_file_and_log, Path(url.database))
    tool = "pg_dump" if backend == "postgres" else "mysqldump"
    if shutil.which(tool) is None:
        if IN_CI:
            raise AssertionError(f"{tool} is not installed")
        pytest.skip(f"{tool} is not installed")
    if backend == "postgres":
        command = [tool, "-h", url.host or "127.0.0.1", "-U", url.username or "postgres"]
        if url.port:
            command += ["-p", str(url.port)]
    else:
        command = [tool, f"-h{url.host or '127.0.0.1'}", f"-u{url.username or 'root'}"]
        if url.port:
            command += [f"-P{url.port}"]
        if url.password:
            command += [f"-p{url.password}"]
    assert url.database is not None
    process = await asyncio.create_subprocess_exec(
        *command,
        url.database,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out


async def test_the_database_shows_no_plaintext(
    backend: str, engine: AsyncEngine, db_url: str
) -> None:
    store = MetadataStore(Contact, engine, create_tables=True, keys=keys())
    await store.create_tables()
    # A token of this run in every value: nothing else in the database can hold it.
    token = secrets.token_hex(4)
    secret: dict[str, dict[str, object]] = {}
    for index in range(VALUES):
        marker = f"{token}{index:04d}"
        secret[f"session-{index:04d}"] = {
            "email": f"person.{marker}@example.org",
            "phone": f"+44 {marker}",
            "aliases": [f'Zoë "{marker}" \\ naïve'],
            "profile": {"note": f"ünïcode {marker} 'quoted'"},
            # A plain field beside them: the search sees what is stored in plaintext.
            "owner_id": f"visible-{marker}",
        }
    sessions = list(secret)
    half = sessions[: VALUES // 2]
    await store.set_many({sid: secret[sid] for sid in half})
    for sid in sessions[VALUES // 2 :]:
        await store.bind(sid).set_metadata(secret[sid])
    # Reads, finds and a rotation happen as they would in use, and store nothing in clear.
    assert (
        await store.bind("session-0007").get_metadata()
    ).email == f"person.{token}0007@example.org"
    found = await store.find_sessions_by_metadata("email", f"person.{token}0123@example.org")
    assert found == ["session-0123"]
    rotated = MetadataStore(Contact, engine, keys=keys("k1", "k2"))
    assert (await rotated.rekey(batch_size=700)).rewritten == 4 * VALUES

    stored = await database_bytes(backend, db_url)
    # The control: each plaintext owner_id is found, so the search would find a leak.
    assert sum(str(secret[sid]["owner_id"]).encode() in stored for sid in sessions) == VALUES
    leaked = []
    for index, sid in enumerate(sessions):
        marker = f"{token}{index:04d}"
        values = secret[sid]
        plaintexts = [
            str(values["email"]),
            str(values["phone"]),
            *(str(alias) for alias in values["aliases"]),  # type: ignore[attr-defined]
            json.dumps(values["profile"], ensure_ascii=False, separators=(",", ":")),
            f"ünïcode {marker}",
        ]
        for plaintext in plaintexts:
            if any(needle in stored for needle in needles(plaintext)):
                leaked.append(plaintext)
        # The marker alone, in whatever escaping: only owner_id may hold it.
        if stored.count(marker.encode()) != stored.count(f"visible-{marker}".encode()):
            leaked.append(marker)
    assert not leaked, f"{len(leaked)} plaintexts found in the {backend} database: {leaked[:5]}"
