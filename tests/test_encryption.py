"""Encrypted fields on every backend: round trips, equality through the blind index,
refusals, wrong or missing keys, tampered and moved ciphertexts, and key rotation."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Annotated, Any

import pytest

pytest.importorskip("cryptography", reason="encrypted fields need the encryption extra")

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import (
    DecryptionError,
    Encrypted,
    EncryptionKeys,
    FilterError,
    InvalidArgumentError,
    MetadataStore,
    SessionMeta,
    StoredValueError,
    check_store,
    field,
    rehash_store,
)
from sessionmeta.core.codec import equality_hash
from sessionmeta.core.encryption import parse_envelope

from .encrypted_models import Address, Contact, PlainContact, Tier

K1 = EncryptionKeys.generate_key()
K2 = EncryptionKeys.generate_key()
INDEX = EncryptionKeys.generate_key()
INDEX2 = EncryptionKeys.generate_key()


def keys(*ids: str, current: str | None = None, index: bytes = INDEX) -> EncryptionKeys:
    material = {"k1": K1, "k2": K2}
    chosen = ids or ("k1",)
    return EncryptionKeys(
        {key_id: material[key_id] for key_id in chosen},
        current=current or chosen[-1],
        index_key=index,
    )


def quoted(name: str, engine: AsyncEngine) -> str:
    return f"`{name}`" if engine.dialect.name in ("mysql", "mariadb") else f'"{name}"'


async def raw_rows(engine: AsyncEngine) -> list[tuple[str, str, str, str | None, str | None]]:
    """Every metadata row as stored: (session_id, key, value, value_hash, sort_key)."""
    key = quoted("key", engine)
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                f"SELECT session_id, {key}, value, value_hash, sort_key "
                f"FROM agent_sessions_metadata ORDER BY session_id, {key}"
            )
        )
        return [tuple(row) for row in rows]


async def item_rows(engine: AsyncEngine) -> list[tuple[str, str]]:
    key = quoted("key", engine)
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(f"SELECT session_id, {key} FROM agent_sessions_metadata_items")
        )
        return [(row[0], row[1]) for row in rows]


async def set_stored_text(engine: AsyncEngine, session_id: str, key: str, value: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"UPDATE agent_sessions_metadata SET value = :value "
                f"WHERE session_id = :sid AND {quoted('key', engine)} = :key"
            ),
            {"value": value, "sid": session_id, "key": key},
        )


async def stored_text(engine: AsyncEngine, session_id: str, key: str) -> str:
    for sid, stored_key, value, _, _ in await raw_rows(engine):
        if (sid, stored_key) == (session_id, key):
            return value
    raise AssertionError(f"no row {session_id!r}, {key!r}")


@pytest.fixture
async def contacts(engine: AsyncEngine) -> MetadataStore[Contact]:
    store = MetadataStore(Contact, engine, create_tables=True, keys=keys())
    await store.create_tables()
    return store


EVERY_TYPE: dict[str, Any] = {
    "email": "ada@example.org",
    "phone": "+44 20 7946 0000",
    "age": 36,
    "score": -0.0,
    "balance": Decimal("10.50"),
    "born": dt.date(1815, 12, 10),
    "seen_at": dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    "verified": True,
    "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "tier": Tier.PRO,
    "aliases": ["ada", "countess", "ada"],
    "codes": {3, 1, 2},
    "profile": {"b": [1, 2.5, None], "a": {"nested": 'ünïcode "quoted"'}},
    "address": Address(street="12 St James's Square", city="London"),
    "owner_id": "u1",
    "tags": ["plain"],
}


async def test_every_field_type_round_trips(
    contacts: MetadataStore[Contact], engine: AsyncEngine
) -> None:
    await contacts.bind("s1").set_metadata(EVERY_TYPE)
    await contacts.set_many({"s2": EVERY_TYPE})
    expected = Contact(**EVERY_TYPE)
    for sid in ("s1", "s2"):
        read = await contacts.bind(sid).get_metadata()
        assert read == expected
        assert repr(read.score) == "-0.0"
        assert read.balance is not None and read.balance.as_tuple() == Decimal("10.50").as_tuple()
        assert read.seen_at is not None and read.seen_at.utcoffset() == dt.timedelta(hours=5)
    assert await contacts.get_many(["s1", "s2"]) == {"s1": expected, "s2": expected}
    listed = await contacts.list_sessions()
    assert [(item.session_id, item.metadata) for item in listed] == [
        ("s1", expected),
        ("s2", expected),
    ]
    versioned = await contacts.bind("s1").get_metadata_versioned()
    assert versioned.metadata == expected
    await contacts.bind("s1").set_metadata({"age": 37}, expected_version=versioned.version)
    assert (await contacts.bind("s1").get_metadata(["age"])).age == 37


async def test_add_to_and_remove_from_an_encrypted_list(
    contacts: MetadataStore[Contact], engine: AsyncEngine
) -> None:
    bound = contacts.bind("s1")
    await bound.add_to("aliases", "a", "b")
    await bound.add_to("codes", 5, 6)
    await bound.remove_from("aliases", "a")
    read = await bound.get_metadata()
    assert read.aliases == ["b"]
    assert read.codes == {5, 6}
    assert await item_rows(engine) == []


async def test_stored_rows_show_no_plaintext_nor_order(
    contacts: MetadataStore[Contact], engine: AsyncEngine
) -> None:
    await contacts.bind("s1").set_metadata(EVERY_TYPE)
    rows = {
        key: (value, value_hash, sort_key)
        for _, key, value, value_hash, sort_key in await raw_rows(engine)
    }
    assert rows["owner_id"][0] == '"u1"'
    for key in Contact.model_fields:
        if key in ("owner_id", "tags"):
            continue
        value, value_hash, sort_key = rows[key]
        envelope = parse_envelope(value)
        assert envelope is not None and envelope.key_id == "k1", value
        assert sort_key is None
        # The blind index is keyed: not the plain equality hash anyone could compute.
        assert value_hash != equality_hash(getattr(Contact(**EVERY_TYPE), key))
    # The encrypted list keeps no element rows; the plain one does.
    assert {key for _, key in await item_rows(engine)} == {"tags"}
    # The same value encrypts differently each time (a fresh nonce), hashes alike.
    await contacts.bind("s2").set_metadata({"email": EVERY_TYPE["email"]})
    again = {
        (sid, key): (value, value_hash) for sid, key, value, value_hash, _ in await raw_rows(engine)
    }
    assert again["s1", "email"][0] != again["s2", "email"][0]
    assert again["s1", "email"][1] == again["s2", "email"][1]


async def test_equality_finds_through_the_blind_index(contacts: MetadataStore[Contact]) -> None:
    await contacts.set_many(
        {
            "s1": {"email": "a@example.org", "age": 30, "codes": {1, 2}, "tier": "pro"},
            "s2": {"email": "b@example.org", "age": 31, "codes": {2, 1}},
            "s3": {
                "email": "a@example.org",
                "seen_at": dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc),
            },
        }
    )
    assert await contacts.find_sessions_by_metadata("email", "a@example.org") == ["s1", "s3"]
    assert list(await contacts.find_sessions(field("email") == "b@example.org")) == ["s2"]
    assert list(await contacts.find_sessions({"email": "a@example.org"}, {"age": 30})) == ["s1"]
    assert list(await contacts.find_sessions(field("age").is_in([31, 99]))) == ["s2"]
    assert list(await contacts.find_sessions(field("email") != "a@example.org")) == ["s2"]
    assert list(await contacts.find_sessions(field("email").not_in(["b@example.org"]))) == [
        "s1",
        "s3",
    ]
    # Equality as the field's type has it: a float equal to the int, a set in any order,
    # an instant in another offset, an enum by its value.
    assert list(await contacts.find_sessions(field("age") == 30.0)) == ["s1"]
    assert list(await contacts.find_sessions(field("codes") == {2, 1})) == ["s1", "s2"]
    later = dt.datetime(2026, 1, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert list(await contacts.find_sessions(field("seen_at") == later)) == ["s3"]
    assert list(await contacts.find_sessions(field("tier") == Tier.PRO)) == ["s1"]
    assert await contacts.count_sessions(field("email") == "a@example.org") == 2
    assert list(await contacts.find_sessions(field("phone").missing())) == ["s1", "s2", "s3"]
    # Scoped by an encrypted key: the scope compares blind-index hashes too.
    scoped = contacts.scoped(email="a@example.org")
    assert list(await scoped.find_sessions()) == ["s1", "s3"]


async def test_a_store_with_another_index_key_finds_nothing(
    contacts: MetadataStore[Contact], engine: AsyncEngine
) -> None:
    await contacts.bind("s1").set_metadata({"email": "a@example.org"})
    other = MetadataStore(Contact, engine, keys=keys(index=INDEX2))
    assert await other.find_sessions_by_metadata("email", "a@example.org") == []
    assert (await other.bind("s1").get_metadata()).email == "a@example.org"


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        (lambda store: store.find_sessions(field("age") > 3), "'gt'"),
        (lambda store: store.find_sessions(field("born") <= dt.date(2000, 1, 1)), "'le'"),
        (lambda store: store.find_sessions(field("aliases").contains("ada")), "'contains'"),
        (lambda store: store.find_sessions(order_by="email"), "ordering"),
        (lambda store: store.list_sessions(order_by="-age"), "ordering"),
    ],
)
async def test_ranges_order_and_contains_are_refused(
    contacts: MetadataStore[Contact], query: Any, fragment: str
) -> None:
    with pytest.raises(FilterError) as refused:
        await query(contacts)
    assert "Encrypted()" in str(refused.value)
    assert fragment in str(refused.value)


async def test_encrypted_fields_need_keys(engine: AsyncEngine) -> None:
    with pytest.raises(InvalidArgumentError, match=r"'email'.*keys=EncryptionKeys"):
        MetadataStore(Contact, engine)
    with pytest.raises(InvalidArgumentError, match="keys must be EncryptionKeys"):
        MetadataStore(Contact, engine, keys={"k1": K1})  # type: ignore[arg-type]


def test_keys_are_checked_and_never_shown() -> None:
    with pytest.raises(InvalidArgumentError, match="16 bytes long"):
        EncryptionKeys({"k1": b"x" * 16}, current="k1", index_key=INDEX)
    with pytest.raises(InvalidArgumentError, match="'k9' is not one of"):
        EncryptionKeys({"k1": K1}, current="k9", index_key=INDEX)
    with pytest.raises(InvalidArgumentError, match="index_key must differ"):
        EncryptionKeys({"k1": K1}, current="k1", index_key=K1)
    with pytest.raises(InvalidArgumentError, match="key id"):
        EncryptionKeys({'k"1': K1}, current='k"1', index_key=INDEX)
    ring = keys("k1", "k2")
    assert repr(ring) == "EncryptionKeys(key_ids=['k1', 'k2'], current='k2')"
    assert EncryptionKeys.from_json(ring.to_json()) == ring
    assert ring != keys("k1", "k2", current="k1")
    assert K1.hex() not in repr(ring)


async def test_a_wrong_key_is_a_clear_error(
    contacts: MetadataStore[Contact], engine: AsyncEngine
) -> None:
    await contacts.bind("s1").set_metadata({"email": "a@example.org", "owner_id": "u1"})
    # Same key id, other key material: the tag does not authenticate.
    impostor = EncryptionKeys({"k1": K2}, current="k1", index_key=INDEX)
    wrong = MetadataStore(Contact, engine, keys=impostor, on_invalid="default")
    for read in (
        lambda: wrong.bind("s1").get_metadata(),
        lambda: wrong.get_many(["s1"]),
        lambda: wrong.list_sessions(),
    ):
        with pytest.raises(DecryptionError) as failed:
            await read()
        error = failed.value
        assert isinstance(error, StoredValueError)
        assert (error.session_id, error.key, error.key_id) == ("s1", "email", "k1")
        assert "session 's1', key 'email'" in str(error)
        assert "key id 'k1'" in str(error)
        assert "a@example.org" not in str(error)


async def test_a_missing_key_is_a_clear_error(
    contacts: MetadataStore[Contact], engine: AsyncEngine
) -> None:
    await contacts.bind("s1").set_metadata({"email": "a@example.org"})
    newer = MetadataStore(Contact, engine, keys=keys("k2"))
    with pytest.raises(DecryptionError, match=r"key id 'k1'.*no key 'k1' \(they hold 'k2'\)"):
        await newer.bind("s1").get_metadata()


async def test_tampered_and_moved_ciphertexts_do_not_decrypt(
    contacts: MetadataStore[Contact], engine: AsyncEngine
) -> None:
    await contacts.bind("s1").set_metadata({"email": "a@example.org", "phone": "+1 555"})
    await contacts.bind("s2").set_metadata({"email": "b@example.org"})
    email = await stored_text(engine, "s1", "email")
    document = json.loads(email)
    data = document["data"]
    flipped = data[:20] + ("A" if data[20] != "A" else "B") + data[21:]
    cases = [
        # A bit of the ciphertext changed.
        ("s1", "email", json.dumps({**document, "data": flipped}, separators=(",", ":"))),
        # s1's email copied into s2's row: another session.
        ("s2", "email", email),
        # s1's email copied into s1's phone: another key.
        ("s1", "phone", email),
        # Relabelled with another key id the store holds.
        ("s1", "email", email.replace('"kid":"k1"', '"kid":"k2"')),
        # Plaintext slipped in where ciphertext belongs.
        ("s1", "email", '"mallory@example.org"'),
    ]
    both = MetadataStore(Contact, engine, keys=keys("k1", "k2", current="k1"))
    for sid, key, forged in cases:
        original = await stored_text(engine, sid, key)
        await set_stored_text(engine, sid, key, forged)
        with pytest.raises(DecryptionError) as failed:
            await both.bind(sid).get_metadata()
        assert (failed.value.session_id, failed.value.key) == (sid, key)
        await set_stored_text(engine, sid, key, original)
    assert (await both.bind("s1").get_metadata()).email == "a@example.org"


async def test_a_decrypted_value_that_no_longer_fits_names_no_plaintext(
    engine: AsyncEngine,
) -> None:
    class Loose(SessionMeta):
        phone: Annotated[str | None, Encrypted()] = None

    loose = MetadataStore(Loose, engine, create_tables=True, keys=keys())
    await loose.bind("s1").set_metadata({"phone": "+1 555 0100 " + "9" * 40})
    strict = MetadataStore(Contact, engine, keys=keys())
    with pytest.raises(StoredValueError) as failed:
        await strict.bind("s1").get_metadata()
    assert not isinstance(failed.value, DecryptionError)
    assert "555" not in str(failed.value)
    report = await check_store(strict)
    assert report.invalid_total == 1
    assert "555" not in report.invalid[0].stored_text


async def test_check_decrypts_and_reports_what_does_not(
    contacts: MetadataStore[Contact], engine: AsyncEngine
) -> None:
    await contacts.bind("s1").set_metadata(EVERY_TYPE)
    await contacts.bind("s2").set_metadata({"email": "b@example.org"})
    assert (await check_store(contacts)).ok
    await set_stored_text(engine, "s2", "email", await stored_text(engine, "s1", "email"))
    report = await check_store(contacts)
    assert report.invalid_total == 1
    (invalid,) = report.invalid
    assert (invalid.session_id, invalid.key) == ("s2", "email")
    assert "cannot decrypt" in invalid.reason


async def test_rotation_reads_with_both_keys_then_rekeys(engine: AsyncEngine) -> None:
    old = MetadataStore(Contact, engine, create_tables=True, keys=keys("k1"))
    await old.create_tables()
    values = {f"s{i:02d}": {"email": f"user{i}@example.org", "owner_id": "u"} for i in range(23)}
    await old.set_many(values)
    rotated = MetadataStore(Contact, engine, keys=keys("k1", "k2", current="k2"))
    # New writes take the new key; old values still read.
    await rotated.bind("s00").set_metadata({"phone": "+1 555"})
    assert (await rotated.bind("s01").get_metadata()).email == "user1@example.org"
    report = await rotated.rekey(batch_size=4)
    assert report.ok
    assert report.rows == 47
    assert report.rewritten == 23
    envelopes = [
        parse_envelope(value) for _, key, value, _, _ in await raw_rows(engine) if key != "owner_id"
    ]
    assert {envelope.key_id for envelope in envelopes if envelope is not None} == {"k2"}
    assert len(envelopes) == 24
    # Nothing left to do; the old key can go.
    assert (await rotated.rekey()).rewritten == 0
    only_new = MetadataStore(Contact, engine, keys=keys("k2"))
    assert {sid: model.email for sid, model in (await only_new.get_many(list(values))).items()} == {
        sid: value["email"] for sid, value in values.items()
    }
    assert await only_new.find_sessions_by_metadata("email", "user7@example.org") == ["s07"]


async def test_rotating_the_index_key_rehashes(engine: AsyncEngine) -> None:
    old = MetadataStore(Contact, engine, create_tables=True, keys=keys("k1"))
    await old.create_tables()
    await old.set_many({"s1": {"email": "a@example.org"}, "s2": {"email": "b@example.org"}})
    new_index = MetadataStore(Contact, engine, keys=keys("k1", index=INDEX2))
    # Until the hashes are remade, finds by the new index key miss the old rows:
    assert await new_index.find_sessions_by_metadata("email", "a@example.org") == []
    assert (await check_store(new_index)).stale_total == 2
    report = await new_index.rekey()
    assert report.rewritten == 2
    assert await new_index.find_sessions_by_metadata("email", "a@example.org") == ["s1"]
    assert (await check_store(new_index)).ok
    # check's own rehash does the same for a single index-key change.
    assert await rehash_store(old) == 2
    assert await old.find_sessions_by_metadata("email", "b@example.org") == ["s2"]


async def test_rekey_encrypts_values_stored_before_the_field_was_encrypted(
    engine: AsyncEngine,
) -> None:
    plain = MetadataStore(PlainContact, engine, create_tables=True)
    await plain.create_tables()
    await plain.bind("s1").set_metadata({"email": "a@example.org", "aliases": ["x", "y"]})
    await plain.bind("s2").set_metadata({"owner_id": "u"})
    contacts = MetadataStore(Contact, engine, keys=keys())
    with pytest.raises(DecryptionError, match="not encrypted"):
        await contacts.bind("s1").get_metadata()
    report = await contacts.rekey()
    assert (report.rewritten, report.ok) == (2, True)
    read = await contacts.bind("s1").get_metadata()
    assert (read.email, read.aliases) == ("a@example.org", ["x", "y"])
    assert await contacts.find_sessions_by_metadata("email", "a@example.org") == ["s1"]
    assert await item_rows(engine) == []
    assert all(
        parse_envelope(value) is not None
        for _, key, value, _, _ in await raw_rows(engine)
        if key in ("email", "aliases")
    )


async def test_rekey_reports_values_it_cannot_read(
    contacts: MetadataStore[Contact], engine: AsyncEngine
) -> None:
    await contacts.bind("s1").set_metadata({"email": "a@example.org"})
    await contacts.bind("s2").set_metadata({"email": "b@example.org"})
    await set_stored_text(engine, "s2", "email", await stored_text(engine, "s1", "email"))
    rotated = MetadataStore(Contact, engine, keys=keys("k1", "k2"))
    report = await rotated.rekey()
    assert (report.rewritten, report.unreadable_total) == (1, 1)
    assert (report.unreadable[0].session_id, report.unreadable[0].key) == ("s2", "email")
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        await rotated.rekey(batch_size=0)


HIDE_CRYPTOGRAPHY = """
import importlib.abc, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
"""


def test_without_cryptography_models_declare_and_keys_name_the_extra() -> None:
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    import sessionmeta

    code = HIDE_CRYPTOGRAPHY + textwrap.dedent(
        """
        from typing import Annotated
        from sessionmeta import Encrypted, EncryptionKeys, SessionMeta

        class Contact(SessionMeta):
            email: Annotated[str | None, Encrypted()] = None

        try:
            EncryptionKeys({"k1": b"1" * 32}, current="k1", index_key=b"2" * 32)
        except ModuleNotFoundError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(Path(sessionmeta.__file__).resolve().parents[1])},
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'sessionmeta[encryption]'" in result.stdout
