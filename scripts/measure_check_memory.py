"""Measure the peak memory of `sessionmeta check` at several table sizes.

Fills the metadata table of DATABASE_URL (emptied first: use a scratch
database) with N sessions of three keys each, straight in SQL, then runs the
real command under /usr/bin/time and prints its peak RSS and wall time:

    python scripts/measure_check_memory.py postgresql+asyncpg://pg@localhost/scratch 100000 1000000
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from sessionmeta import MetadataStore
from sessionmeta.demo import SupportTicket

ROOT = Path(__file__).resolve().parent.parent

# Three keys per session, all valid for sessionmeta.demo:SupportTicket.
_POSTGRES_FILL = """
INSERT INTO agent_sessions (session_id)
    SELECT 's' || lpad(i::text, 8, '0') FROM generate_series(1, :n) AS i;
INSERT INTO agent_sessions_metadata (session_id, key, value, value_hash, sort_key)
    SELECT 's' || lpad(i::text, 8, '0'), k.key,
           CASE k.key WHEN 'owner_id' THEN '"user' || (i % 1000) || '"'
                      WHEN 'priority' THEN (i % 5)::text
                      ELSE '"Ticket number ' || i || '"' END,
           substr(md5(i::text || k.key), 1, 32), NULL
    FROM generate_series(1, :n) AS i
    CROSS JOIN (VALUES ('owner_id'), ('priority'), ('title')) AS k(key);
"""
_SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n)
INSERT INTO agent_sessions (session_id) SELECT printf('s%08d', i) FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n),
     k(key) AS (VALUES ('owner_id'), ('priority'), ('title'))
INSERT INTO agent_sessions_metadata (session_id, key, value, value_hash, sort_key)
    SELECT printf('s%08d', i), k.key,
           CASE k.key WHEN 'owner_id' THEN '"user' || (i % 1000) || '"'
                      WHEN 'priority' THEN CAST(i % 5 AS TEXT)
                      ELSE '"Ticket number ' || i || '"' END,
           hex(randomblob(16)), NULL
    FROM n CROSS JOIN k;
"""
# MariaDB's sequence engine stands in for generate_series.
_MARIADB_FILL = """
INSERT INTO agent_sessions (session_id)
    SELECT CONCAT('s', LPAD(seq, 8, '0')) FROM seq_1_to_{n};
INSERT INTO agent_sessions_metadata (session_id, `key`, value, value_hash, sort_key)
    SELECT CONCAT('s', LPAD(i.seq, 8, '0')), k.`key`,
           CASE k.`key` WHEN 'owner_id' THEN CONCAT('"user', i.seq % 1000, '"')
                        WHEN 'priority' THEN CAST(i.seq % 5 AS CHAR)
                        ELSE CONCAT('"Ticket number ', i.seq, '"') END,
           SUBSTR(MD5(CONCAT(i.seq, k.`key`)), 1, 32), NULL
    FROM seq_1_to_{n} AS i
    CROSS JOIN (
        SELECT 'owner_id' AS `key` UNION ALL SELECT 'priority' UNION ALL SELECT 'title'
    ) AS k;
"""


async def fill(url: str, sessions: int) -> None:
    engine = create_async_engine(url)
    store = MetadataStore(SupportTicket, engine)
    async with engine.begin() as connection:
        await connection.run_sync(store.sql_metadata.drop_all)
    await store.create_tables()
    script = {"sqlite": _SQLITE_FILL, "postgresql": _POSTGRES_FILL}.get(
        engine.dialect.name, _MARIADB_FILL.replace("{n}", str(sessions))
    )
    async with engine.begin() as connection:
        for statement in script.split(";"):
            if statement.strip():
                await connection.execute(text(statement), {"n": sessions})
    await engine.dispose()


def measure(url: str) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SESSIONMETA_URL": url}
    started = time.monotonic()
    done = subprocess.run(
        [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "sessionmeta",
            "check",
            "--model",
            "sessionmeta.demo:SupportTicket",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    assert match is not None, done.stderr
    return int(match.group(1)), elapsed


def main() -> None:
    url, *sizes = sys.argv[1:]
    for size in sizes:
        asyncio.run(fill(url, int(size)))
        peak_kb, seconds = measure(url)
        print(
            f"{int(size):>9,} sessions ({3 * int(size):,} rows): "
            f"peak RSS {peak_kb / 1024:.1f} MiB, {seconds:.1f} s"
        )


if __name__ == "__main__":
    main()
