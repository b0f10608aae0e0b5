"""Encrypting a session's rows on their way to the database and decrypting them back:
no database, no I/O.

Rows are encoded (``codec.encode_model``) with the plaintext JSON text and, for
encrypted fields, the blind index; only here, where the session id is known (it is
part of the associated data), does the text become ciphertext. Every write of value
rows passes :func:`seal_rows`, every read that decodes passes :func:`open_rows`.
"""

from __future__ import annotations

import json
import json.decoder
from collections.abc import Callable, Sequence
from typing import Any

from sessionmeta.core.codec import EncodedValue
from sessionmeta.core.spec import ModelSpec
from sessionmeta.errors import DecryptionError

__all__ = ["object_rows", "open_row", "open_rows", "seal_rows"]

_DECODER = json.JSONDecoder()
# The standard library's string scanner, which json.JSONDecoder uses (untyped there).
_scan_string: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_SPACE = " \t\n\r"


def seal_rows(
    spec: ModelSpec[Any], session_id: str, rows: list[EncodedValue]
) -> list[EncodedValue]:
    """``rows`` with the text of each encrypted field's value encrypted for ``session_id``."""
    if not spec.encrypted:
        return rows
    sealed: list[EncodedValue] = []
    for row in rows:
        field = spec.fields.get(row.key)
        if field is None or not field.encrypted:
            sealed.append(row)
            continue
        keys = spec.require_keys(field)
        sealed.append(row._replace(value=keys.encrypt(session_id, row.key, row.value)))
    return sealed


def open_row(spec: ModelSpec[Any], session_id: str, key: str, stored_text: str) -> str:
    """The JSON text of one stored value: decrypted when its field is encrypted."""
    field = spec.fields.get(key)
    if field is None or not field.encrypted:
        return stored_text
    if spec.keys is None:
        raise DecryptionError(session_id, key, None, "the store was given no EncryptionKeys")
    return spec.keys.decrypt(session_id, key, stored_text)


def open_rows(
    spec: ModelSpec[Any], session_id: str, rows: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """A session's stored ``(key, text)`` rows with encrypted values decrypted; raises
    :class:`~sessionmeta.DecryptionError` for a value that does not decrypt."""
    if not spec.encrypted:
        return list(rows)
    return [(key, open_row(spec, session_id, key, text)) for key, text in rows]


def object_rows(text: str) -> list[tuple[str, str]]:
    """The ``(key, value text)`` members of a JSON object as the database built it from
    stored texts, each value's text kept verbatim (a listing's one object per session)."""
    rows: list[tuple[str, str]] = []
    index = text.index("{") + 1
    while True:
        while text[index] in _SPACE:
            index += 1
        if text[index] == "}":
            return rows
        if text[index] == ",":
            index += 1
            continue
        key, index = _scan_string(text, index + 1)
        index = text.index(":", index) + 1
        while text[index] in _SPACE:
            index += 1
        _, end = _DECODER.raw_decode(text, index)
        rows.append((key, text[index:end]))
        index = end
