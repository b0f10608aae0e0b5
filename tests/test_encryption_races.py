"""Key rotation against concurrent reads and writes, with the race harness of tests/racing.py.

In each round a few sessions hold values under the old key; ``rekey`` (in batches of
two rows) races a writer that rewrites some of them under the new key and a reader
that reads them all. A value written during the rotation must never be overwritten
with what rekey read before it (its UPDATE is conditioned on the text read), every
read must decrypt, and once rekey is done every value is under the new key.
"""

from __future__ import annotations

import asyncio
import random

import pytest

pytest.importorskip("cryptography", reason="encrypted fields need the encryption extra")

from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import MetadataStore, RekeyReport
from sessionmeta.core.encryption import parse_envelope

from .encrypted_models import Contact
from .racing import Tally, kind, race, run_rounds
from .test_encryption import keys, raw_rows

ROUNDS = 40
SESSIONS = 6
SEED = 20261201


async def test_rekey_never_overwrites_a_concurrent_write(backend: str, engine: AsyncEngine) -> None:
    old = MetadataStore(Contact, engine, create_tables=True, keys=keys("k1"))
    await old.create_tables()
    rotated = MetadataStore(Contact, engine, keys=keys("k1", "k2", current="k2"))
    tally = Tally(backend, ROUNDS)

    async def one_round(index: int, rng: random.Random) -> None:
        # Later rounds sort first: the rotation reaches this round's rows at once.
        ids = [f"r{ROUNDS - index:03d}-{n}" for n in range(SESSIONS)]
        await old.set_many({sid: {"email": f"old-{sid}"} for sid in ids})
        written = rng.sample(ids, 2)

        async def write_and_read() -> dict[str, str | None]:
            seen: dict[str, str | None] = {}
            for sid in written:
                await rotated.bind(sid).set_metadata({"email": f"new-{sid}"})
                read = await rotated.get_many(ids)
                seen.update({key: model.email for key, model in read.items()})
            return seen

        report, seen = await race(tally, rng, lambda: rotated.rekey(batch_size=2), write_and_read)
        tally.outcomes[f"rekey {kind(report)}"] += 1
        tally.outcomes[f"writer {kind(seen)}"] += 1
        tally.expect(not isinstance(report, BaseException), "rekey failed", index, report)
        tally.expect(not isinstance(seen, BaseException), "a read failed", index, seen)
        if isinstance(seen, dict):
            stray = {
                sid: email
                for sid, email in seen.items()
                if email not in (f"old-{sid}", f"new-{sid}")
            }
            tally.expect(not stray, "a read saw neither value", index, stray)
        final = await rotated.get_many(ids)
        for sid in ids:
            expected = f"new-{sid}" if sid in written else f"old-{sid}"
            tally.expect(
                final[sid].email == expected, "a write was lost", index, (sid, final[sid].email)
            )
        rows = [row for row in await raw_rows(engine) if row[0] in ids]
        kids = {parse_envelope(row[2]).key_id for row in rows}  # type: ignore[union-attr]
        tally.expect(kids == {"k2"}, "a value stayed under the old key", index, kids)
        if isinstance(report, RekeyReport):
            # Whether the writer's rows were rewritten by rekey too or already new when read.
            ours = report.rewritten
            tally.outcomes[
                "rekey rewrote every row" if ours >= SESSIONS else "a write came first"
            ] += 1

    await run_rounds(ROUNDS, 1, SEED, one_round)
    tally.verdict(["rekey rewrote every row"], ["a write came first"])


async def test_two_rekeys_at_once_agree(backend: str, engine: AsyncEngine) -> None:
    old = MetadataStore(Contact, engine, create_tables=True, keys=keys("k1"))
    await old.create_tables()
    values = {f"s{n:03d}": {"email": f"user{n}@example.org", "age": n} for n in range(60)}
    await old.set_many(values)
    rotated = MetadataStore(Contact, engine, keys=keys("k1", "k2"))
    first, second = await asyncio.gather(rotated.rekey(batch_size=7), rotated.rekey(batch_size=11))
    assert first.ok and second.ok
    # Each row rewritten once: the later UPDATE finds the text changed and leaves it.
    assert first.rewritten + second.rewritten == 120
    read = await rotated.get_many(list(values))
    assert {sid: (model.email, model.age) for sid, model in read.items()} == {
        sid: (value["email"], value["age"]) for sid, value in values.items()
    }
