"""Encrypted fields: AES-GCM ciphertext in place of the value, a keyed blind index for
equality. Pure: no database, no I/O.

A field declared ``Annotated[str | None, Encrypted()]`` is stored as a small JSON
envelope, ``{"$encrypted":"A256GCM","kid":"2026-12","data":"..."}``: the key id, then
the nonce and the ciphertext of the value's JSON text (padded with spaces to a multiple
of 16 bytes, so the length shows only roughly). The session id, the storage key and the
key id are the associated data: a ciphertext copied to another session, another key or
another key id does not decrypt. ``value_hash`` is HMAC-SHA256 of the key and the
value's equality form (``codec.equality_form``) under an index key of its own, so
``==``, ``!=``, ``in_`` and ``find_sessions_by_metadata`` still work; equal values of
one key have equal hashes, which is all the index reveals. ``sort_key`` is NULL and
lists keep no item rows: ranges, ordering and ``contains`` are refused.

``cryptography`` (the ``encryption`` extra) is imported on first use only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessionmeta.errors import DecryptionError, InvalidArgumentError

__all__ = ["ALGORITHM", "Encrypted", "EncryptionKeys", "Envelope", "parse_envelope"]

ALGORITHM = "A256GCM"
KEY_BYTES = 32
_NONCE_BYTES = 12
_PAD = 16
_KEY_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ENVELOPE_KEYS = ("$encrypted", "kid", "data")


@dataclass(frozen=True)
class Encrypted:
    """Marks a field to be stored encrypted: ``email: Annotated[str | None, Encrypted()] = None``.

    Reads decrypt it back to the typed value; equality queries (``==``, ``!=``,
    ``in_``, ``not_in``) work through a keyed blind index; ranges, ordering and
    ``contains`` are refused. The store needs ``keys=EncryptionKeys(...)``.
    """


@dataclass(frozen=True)
class Envelope:
    """A stored ciphertext: the id of the key that made it and its nonce and ciphertext."""

    key_id: str
    data: bytes


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "encrypted fields need the cryptography package: pip install 'sessionmeta[encryption]'"
        ) from exc
    return AESGCM(key)


def _associated_data(session_id: str, key: str, key_id: str) -> bytes:
    # Session ids, keys and key ids hold no NUL: the joined text is unambiguous.
    return f"sessionmeta-encrypted-v1\x00{session_id}\x00{key}\x00{key_id}".encode()


def parse_envelope(stored_text: str) -> Envelope | None:
    """The envelope held in a stored value's text; ``None`` if it holds none (plaintext)."""
    if not stored_text.startswith('{"$encrypted"'):
        return None
    try:
        document = json.loads(stored_text)
    except ValueError:
        return None
    if (
        not isinstance(document, dict)
        or tuple(document) != _ENVELOPE_KEYS
        or document["$encrypted"] != ALGORITHM
        or not isinstance(document["kid"], str)
        or not isinstance(document["data"], str)
    ):
        return None
    try:
        data = base64.urlsafe_b64decode(document["data"] + "=" * (-len(document["data"]) % 4))
    except (ValueError, binascii.Error):
        return None
    return Envelope(document["kid"], data)


def _key_bytes(what: str, value: object) -> bytes:
    if isinstance(value, str):
        try:
            value = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (ValueError, binascii.Error):
            raise InvalidArgumentError(f"{what} is not base64 text") from None
    if not isinstance(value, bytes):
        raise InvalidArgumentError(
            f"{what} must be {KEY_BYTES} bytes (or their base64 text), not {type(value).__name__}"
        )
    if len(value) != KEY_BYTES:
        raise InvalidArgumentError(
            f"{what} is {len(value)} bytes long; AES-256 and the blind index take "
            f"{KEY_BYTES} random bytes (EncryptionKeys.generate_key())"
        )
    return value


class EncryptionKeys:
    """The keys of a store's encrypted fields.

    ``keys`` maps key ids to 32-byte AES-256 keys (bytes, or their base64 text);
    ``current`` is the id new values are encrypted with; values made with any other
    listed key still decrypt, so a rotation adds a key, makes it current, runs
    ``store.rekey()`` (``sessionmeta rekey``), and only then drops the old key.
    ``index_key`` (32 bytes, distinct from every encryption key) keys the blind index
    that serves equality queries.
    """

    def __init__(
        self, keys: Mapping[str, bytes | str], *, current: str, index_key: bytes | str
    ) -> None:
        if not isinstance(keys, Mapping) or not keys:
            raise InvalidArgumentError("EncryptionKeys needs at least one key: {key_id: key}")
        self._keys: dict[str, bytes] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise InvalidArgumentError(
                    f"key id {key_id!r} must be 1 to 64 letters, digits or . _ : -"
                )
            self._keys[key_id] = _key_bytes(f"key {key_id!r}", key)
        if current not in self._keys:
            raise InvalidArgumentError(
                f"current key id {current!r} is not one of the keys {sorted(self._keys)}"
            )
        self.current = current
        self._index_key = _key_bytes("index_key", index_key)
        if any(hmac.compare_digest(self._index_key, key) for key in self._keys.values()):
            raise InvalidArgumentError(
                "index_key must differ from every encryption key: the blind index is keyed "
                "apart from the ciphertexts"
            )
        # Built now: a missing cryptography package is reported here, naming the extra.
        self._ciphers: dict[str, Any] = {key_id: _aesgcm(key) for key_id, key in self._keys.items()}

    def _fingerprint(self) -> bytes:
        digest = hashlib.sha256(self.current.encode())
        for key_id, key in sorted(self._keys.items()):
            digest.update(f"\x00{key_id}\x00".encode() + key)
        digest.update(b"\x00index\x00" + self._index_key)
        return digest.digest()

    def __eq__(self, other: object) -> bool:
        # Equal keys serve alike: the Agents drop-in shares one store between them.
        if not isinstance(other, EncryptionKeys):
            return NotImplemented
        return hmac.compare_digest(self._fingerprint(), other._fingerprint())

    def __hash__(self) -> int:
        return hash(self._fingerprint())

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys values may be encrypted with, sorted."""
        return sorted(self._keys)

    def __repr__(self) -> str:
        # Never the keys themselves.
        return f"EncryptionKeys(key_ids={self.key_ids!r}, current={self.current!r})"

    @staticmethod
    def generate_key() -> bytes:
        """32 random bytes: a new AES-256 key or index key."""
        return os.urandom(KEY_BYTES)

    @classmethod
    def from_json(cls, text: str) -> EncryptionKeys:
        """Keys from ``{"current": ID, "keys": {ID: BASE64, ...}, "index_key": BASE64}``
        (what ``sessionmeta --keys-file`` and ``$SESSIONMETA_KEYS`` hold)."""
        try:
            document = json.loads(text)
        except ValueError:
            raise InvalidArgumentError("encryption keys are not JSON text") from None
        if not isinstance(document, dict) or set(document) != {"current", "keys", "index_key"}:
            raise InvalidArgumentError(
                'encryption keys must be a JSON object {"current": ID, "keys": {ID: BASE64}, '
                '"index_key": BASE64}'
            )
        return cls(document["keys"], current=document["current"], index_key=document["index_key"])

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> EncryptionKeys:
        """Keys from a JSON file, as :meth:`from_json` reads them."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def to_json(self) -> str:
        """The JSON text :meth:`from_json` reads: keep it as secret as the keys."""

        def encoded(key: bytes) -> str:
            return base64.urlsafe_b64encode(key).decode("ascii")

        return json.dumps(
            {
                "current": self.current,
                "keys": {key_id: encoded(key) for key_id, key in sorted(self._keys.items())},
                "index_key": encoded(self._index_key),
            },
            indent=2,
        )

    def encrypt(self, session_id: str, key: str, text: str) -> str:
        """The stored text of the value whose JSON text is ``text``, under the current key."""
        plain = text.encode("utf-8")
        # JSON text never ends with a space: the padding is stripped on reading.
        plain += b" " * (-len(plain) % _PAD)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(
            nonce, plain, _associated_data(session_id, key, self.current)
        )
        data = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f'{{"$encrypted":"{ALGORITHM}","kid":"{self.current}","data":"{data}"}}'

    def decrypt(self, session_id: str, key: str, stored_text: str) -> str:
        """The JSON text of a stored value; :class:`DecryptionError` naming the session,
        the key and the key id when it is not a ciphertext these keys can open here."""
        envelope = parse_envelope(stored_text)
        if envelope is None:
            raise DecryptionError(
                session_id,
                key,
                None,
                "the stored value is not encrypted (written before the field was declared "
                "Encrypted()? `sessionmeta rekey` encrypts such values)",
            )
        if envelope.key_id not in self._keys:
            raise DecryptionError(
                session_id,
                key,
                envelope.key_id,
                f"the store's EncryptionKeys have no key {envelope.key_id!r} "
                f"(they hold {', '.join(map(repr, self.key_ids))})",
            )
        from cryptography.exceptions import InvalidTag

        nonce, sealed = envelope.data[:_NONCE_BYTES], envelope.data[_NONCE_BYTES:]
        try:
            plain = self._ciphers[envelope.key_id].decrypt(
                nonce, sealed, _associated_data(session_id, key, envelope.key_id)
            )
            return str(plain.decode("utf-8").rstrip(" "))
        except (InvalidTag, ValueError):
            raise DecryptionError(
                session_id,
                key,
                envelope.key_id,
                f"the ciphertext does not authenticate under key {envelope.key_id!r}: the key "
                "is not the one that encrypted it, or the stored value was altered or copied "
                "from another session or key",
            ) from None

    def blind_index(self, key: str, form: str) -> str:
        """The ``value_hash`` of an encrypted value whose equality form is ``form``: 128 bits
        of HMAC-SHA256 under the index key, of the storage key and the form."""
        message = f"{key}\x00{form}".encode()
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()[:32]
