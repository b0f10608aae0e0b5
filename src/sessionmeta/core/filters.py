"""What a query asks for: conditions on metadata keys, groups of them, an order.

Plain data, no database and no I/O. :class:`Condition` is the programmatic
form (``Condition("priority", "gt", 2)``); :func:`field` offers the same with
operators (``field("priority") > 2``); ``&``, ``|``, :func:`all_of` and
:func:`any_of` combine them. Values are checked against the model only when a
store runs the query, and before any I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from sessionmeta.errors import FilterError, InvalidArgumentError

__all__ = [
    "AllOf",
    "AnyOf",
    "Condition",
    "Filter",
    "FilterArg",
    "OPERATORS",
    "Operator",
    "OrderBy",
    "OrderArg",
    "MAX_FILTER_CONDITIONS",
    "MAX_FILTER_DEPTH",
    "all_of",
    "any_of",
    "check_filter_size",
    "field",
]

Operator = Literal[
    "eq", "ne", "in", "not_in", "gt", "ge", "lt", "le", "contains", "exists", "missing"
]
OPERATORS: frozenset[str] = frozenset(Operator.__args__)  # type: ignore[attr-defined]


class _Combinable:
    # `a & b & c` is one group of three, not groups nested two deep: a long chain
    # stays within MAX_FILTER_DEPTH.
    def __and__(self, other: Filter) -> AllOf:
        head = self.filters if isinstance(self, AllOf) else (self,)
        return AllOf((*head, *_flatten([other])))

    def __or__(self, other: Filter) -> AnyOf:
        head = self.filters if isinstance(self, AnyOf) else (self,)
        return AnyOf((*head, *_flatten([other])))


@dataclass(frozen=True, slots=True)
class Condition(_Combinable):
    """One test of one key: ``Condition("owner_id", "eq", "u1")``.

    ``in`` and ``not_in`` take an iterable of values; ``exists`` and ``missing``
    take none. Negative operators (``ne``, ``not_in``, ``missing``) are decided
    per session: a session lacking the key matches ``ne`` and ``not_in``.
    """

    key: str
    op: Operator
    value: Any = None


@dataclass(frozen=True, slots=True)
class AllOf(_Combinable):
    """Every filter holds (AND); an empty group matches every session."""

    filters: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class AnyOf(_Combinable):
    """At least one filter holds (OR); an empty group matches no session."""

    filters: tuple[Filter, ...]


Filter = Condition | AllOf | AnyOf
# What query methods accept: a filter, a mapping of keys to values (all equal),
# or a list or tuple of those (all hold).
FilterArg = Union[Filter, Mapping[str, Any], "list[FilterArg]", "tuple[FilterArg, ...]"]


def _flatten(filters: Iterable[FilterArg]) -> tuple[Filter, ...]:
    flat: list[Filter] = []
    for item in filters:
        if isinstance(item, (Condition, AllOf, AnyOf)):
            flat.append(item)
        elif isinstance(item, Mapping):
            flat.extend(Condition(key, "eq", value) for key, value in item.items())
        elif isinstance(item, (list, tuple)):
            flat.extend(_flatten(item))
        else:
            raise InvalidArgumentError(
                "a filter is a Condition, an all_of/any_of group, a mapping of keys to "
                f"values or a list of them, not {item!r} ({type(item).__name__})"
            )
    return tuple(flat)


# Documented in docs/queries.md: beyond these, databases refuse or crawl
# (SQLite's 500-term compound SELECT, its expression depth; PostgreSQL's planner).
MAX_FILTER_DEPTH = 32
MAX_FILTER_CONDITIONS = 256


def check_filter_size(filters: Iterable[Filter]) -> None:
    """Refuse a query nested deeper than MAX_FILTER_DEPTH groups or holding more than
    MAX_FILTER_CONDITIONS conditions, before anything recurses into it."""
    conditions = 0
    stack: list[tuple[Filter, int]] = [(item, 1) for item in filters]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Condition):
            conditions += 1
            if conditions > MAX_FILTER_CONDITIONS:
                raise FilterError(
                    f"a query holds at most {MAX_FILTER_CONDITIONS} conditions; this one "
                    "holds more: split it, or use field(...).is_in([...]) for many values"
                )
            continue
        if depth > MAX_FILTER_DEPTH:
            raise FilterError(
                f"all_of/any_of groups nest at most {MAX_FILTER_DEPTH} deep; this query "
                "nests deeper"
            )
        stack.extend((child, depth + 1) for child in item.filters)


def all_of(*filters: FilterArg) -> AllOf:
    """A group that holds when every filter holds."""
    return AllOf(_flatten(filters))


def any_of(*filters: FilterArg) -> AnyOf:
    """A group that holds when at least one filter holds."""
    return AnyOf(_flatten(filters))


@dataclass(frozen=True, slots=True)
class OrderBy:
    """Order by ``key``: ``"created_at"``, ``"updated_at"`` or ``"session_id"`` (the
    session's own columns) or a metadata key, ``descending`` or not; ties are broken
    by session id. ``metadata=True`` means the metadata key even when it is named
    like a session column.
    """

    key: str
    descending: bool = False
    metadata: bool = False


# "created_at", "-created_at" (descending), "priority", OrderBy(...) or field(...).desc().
OrderArg = str | OrderBy


class field:  # lower case: it reads as a function, field("priority") > 2
    """A metadata key to build conditions with operators.

    ``field("priority") > 2``, ``field("owner_id") == "u1"``, ``field("tags").contains("x")``,
    ``field("title").exists()``; order with ``field("priority").desc()``.
    """

    __slots__ = ("key",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"field({self.key!r})"

    def __eq__(self, value: object) -> Condition:  # type: ignore[override]
        return Condition(self.key, "eq", value)

    def __ne__(self, value: object) -> Condition:  # type: ignore[override]
        return Condition(self.key, "ne", value)

    def __gt__(self, value: object) -> Condition:
        return Condition(self.key, "gt", value)

    def __ge__(self, value: object) -> Condition:
        return Condition(self.key, "ge", value)

    def __lt__(self, value: object) -> Condition:
        return Condition(self.key, "lt", value)

    def __le__(self, value: object) -> Condition:
        return Condition(self.key, "le", value)

    def is_in(self, values: Iterable[Any]) -> Condition:
        """The stored value is one of ``values``."""
        return Condition(self.key, "in", tuple(values))

    def not_in(self, values: Iterable[Any]) -> Condition:
        """The stored value is none of ``values`` (or the key is missing)."""
        return Condition(self.key, "not_in", tuple(values))

    def contains(self, element: Any) -> Condition:
        """The stored list or set holds ``element``."""
        return Condition(self.key, "contains", element)

    def exists(self) -> Condition:
        """The key is stored (even as ``null``)."""
        return Condition(self.key, "exists")

    def missing(self) -> Condition:
        """The key is not stored."""
        return Condition(self.key, "missing")

    def asc(self) -> OrderBy:
        """Order by this metadata key, smallest first; sessions lacking it come first."""
        return OrderBy(self.key, descending=False, metadata=True)

    def desc(self) -> OrderBy:
        """Order by this metadata key, largest first; sessions lacking it come last."""
        return OrderBy(self.key, descending=True, metadata=True)
