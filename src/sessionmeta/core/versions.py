"""Versions of a session's metadata, and list/set arithmetic for add_to/remove_from.

Pure: no I/O. A version is a digest of the stored text of the session's values,
for the keys the model declares. It changes whenever one of them is written with
a different text (``1.0`` over ``1``, ``-0.0`` over ``0.0`` included: values that
are equal but read back differently) or deleted, so a conditional write refuses to
overwrite anything the caller has not seen; a change that was undone before the
write (A to B and back to A) leaves the version as it was, and then the caller's
read is not stale.
"""

from __future__ import annotations

import hashlib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal

from sessionmeta.core.spec import ModelSpec, ModelT
from sessionmeta.errors import InvalidArgumentError

__all__ = [
    "Change",
    "Versioned",
    "check_create_argument",
    "check_version_argument",
    "collection_kind",
    "combine",
    "version_of",
]

Change = Literal["add", "remove"]


@dataclass(frozen=True)
class Versioned(Generic[ModelT]):
    """Metadata as read, with the version to pass to ``set_metadata(expected_version=...)``."""

    metadata: ModelT
    version: str


def version_of(spec: ModelSpec[Any], rows: Iterable[Sequence[Any]]) -> str:
    """The version of a session whose stored ``(key, value text)`` rows are ``rows``."""
    digest = hashlib.sha256()
    for key, text in sorted((row[0], row[1]) for row in rows if spec.knows(row[0])):
        # Keys hold no NUL (ModelSpec refuses them); the text's length bounds it.
        digest.update(f"{key}\x00{len(text)}\x00{text}".encode())
    return digest.hexdigest()[:32]


def check_version_argument(expected_version: object, session_id: str) -> None:
    """Refuse an ``expected_version`` that cannot be a version, before any I/O."""
    if expected_version is not None and not isinstance(expected_version, str):
        raise InvalidArgumentError(
            f"session {session_id!r}: expected_version must be the .version string of "
            f"get_metadata_versioned(), not {expected_version!r} "
            f"({type(expected_version).__name__})"
        )


def check_create_argument(create: object, session_id: str) -> None:
    """Refuse a ``create`` that is not a bool (``"no"`` would be true), before any I/O."""
    if not isinstance(create, bool):
        raise InvalidArgumentError(
            f"session {session_id!r}: create must be True or False, not {create!r}"
        )


def collection_kind(spec: ModelSpec[Any], key: str, session_id: str) -> type:
    """``list``, ``set`` or ``frozenset``: what the field stored under ``key`` holds."""
    field = spec.fields[key]
    info = spec.model.model_fields[field.name]
    annotation: Any = info.annotation
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if origin in (typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
            continue
        break
    kind = typing.get_origin(annotation) or annotation
    if kind not in (list, set, frozenset):
        raise InvalidArgumentError(
            f"session {session_id!r}, key {field.key!r}: {spec.name}.{field.name} is "
            f"{info.annotation!r}, not a list or set: add_to and remove_from change list "
            "and set fields only"
        )
    return typing.cast(type, kind)


def combine(kind: type, current: Any, items: Any, change: Change) -> Any:
    """``current`` with ``items`` added (list: at the end; set: union) or removed
    (list: every occurrence; set: difference); ``None`` for a removal from nothing."""
    if change == "remove":
        if not current:
            return None
        if kind is list:
            return [item for item in current if item not in items]
        return kind(current) - kind(items)
    if kind is list:
        return [*(current or []), *items]
    return kind(current or ()) | kind(items)
