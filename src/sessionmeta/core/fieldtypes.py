"""What a field's declared type allows a query to do with it: no database, no I/O.

Ranges need values whose stored ``sort_key`` follows their own order (numbers,
dates, datetimes); ordering also accepts other scalars (strings order by their
first 200 characters); ``contains`` needs a homogeneous list, set or tuple.
"""

from __future__ import annotations

import collections.abc
import datetime as dt
import enum
import types
import typing
import uuid
from decimal import Decimal
from typing import Any, Literal

__all__ = ["FieldKind", "field_kind", "is_collection"]

FieldKind = Literal["range", "scalar", "collection", "other"]

_COLLECTIONS = (
    list,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.MutableSet,
)
_RANGE_TYPES = (int, float, Decimal, dt.date)
_SCALAR_TYPES = (str, bool, uuid.UUID, enum.Enum)


def _members(annotation: Any) -> list[Any]:
    """The alternatives of ``annotation`` without ``None`` and ``Annotated`` wrappers."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        found: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                found.extend(_members(arg))
        return found
    return [annotation]


def _is_collection_type(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in _COLLECTIONS or annotation in _COLLECTIONS:
        return True
    args = typing.get_args(annotation)
    return origin is tuple and len(args) == 2 and args[1] is Ellipsis


def _kind_of(member: Any) -> FieldKind:
    if _is_collection_type(member):
        return "collection"
    if typing.get_origin(member) is Literal:
        values = typing.get_args(member)
        if all(isinstance(value, str) for value in values):
            return "scalar"
        return "other"
    if isinstance(member, type):
        if issubclass(member, bool) or issubclass(member, _SCALAR_TYPES):
            return "scalar"
        if issubclass(member, _RANGE_TYPES):
            return "range"
    return "other"


def field_kind(annotation: Any) -> FieldKind:
    """How a query may use a field declared as ``annotation`` (``Optional`` ignored)."""
    kinds = {_kind_of(member) for member in _members(annotation)}
    if len(kinds) == 1:
        return kinds.pop()
    # A union of unlike kinds (int | list[int]) supports only what every member does.
    return "other"


def is_collection(annotation: Any) -> bool:
    """Whether values of ``annotation`` are stored as a JSON array of like elements."""
    return field_kind(annotation) == "collection"
