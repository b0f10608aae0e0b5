"""Turning filters and an order into a checked query plan: no database, no I/O.

Every value is validated through its field's type and encoded with the codec
that wrote it, so a filter compares hashes and sort keys exactly as stored.
Errors (unknown key, operator that does not fit the field, bad value, bad
cursor) are raised here, before any I/O. ``sessionmeta.sql.plans`` turns a plan into SQL.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from sessionmeta.core.codec import encode_model, item_hashes
from sessionmeta.core.filters import (
    OPERATORS,
    AllOf,
    AnyOf,
    Condition,
    Filter,
    FilterArg,
    OrderArg,
    OrderBy,
    _flatten,
    check_filter_size,
)
from sessionmeta.core.spec import FieldSpec, ModelSpec, check_session_id
from sessionmeta.errors import FilterError, InvalidArgumentError, InvalidCursorError

__all__ = [
    "MAX_FILTER_KEYS",
    "MAX_LIMIT",
    "SESSION_COLUMNS",
    "Leaf",
    "Node",
    "Order",
    "Plan",
    "check_limit",
    "decode_cursor",
    "encode_cursor",
    "plan_query",
    "resolve_filters",
    "resolve_order",
]

SESSION_COLUMNS = ("session_id", "created_at", "updated_at")
_RANGE_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_DIGITS_START, _DIGITS_END = "0", ":"
_NEGATIONS = {"ne": "eq", "not_in": "in", "missing": "exists"}
# Which positive condition best drives a query from its index: the most selective first.
_DRIVER_PREFERENCE = {"eq": 0, "contains": 1, "in": 2, "range": 3, "exists": 4}

LeafKind = Literal["eq", "in", "range", "contains", "exists"]


@dataclass(frozen=True)
class Leaf:
    """One checked condition: ``key`` and values are names of query parameters."""

    kind: LeafKind
    negated: bool
    key_param: str
    value_params: tuple[str, ...] = ()
    # For ranges: the SQL comparison operator, or "low,high" for both ends of one range
    # (then value_params are the two ends).
    comparison: str = ""
    # For ``in`` on dialects that take an array: one parameter holds the list.
    as_array: bool = False

    def shape(self) -> tuple[Any, ...]:
        # The key's parameter name tells which leaves test the same key (see _renamed).
        return (
            self.kind,
            self.negated,
            self.key_param,
            len(self.value_params),
            self.comparison,
            self.as_array,
        )


@dataclass(frozen=True)
class Group:
    """AND (``any_=False``) or OR of nodes; an empty AND is true, an empty OR false."""

    any_: bool
    nodes: tuple[Node, ...]

    def shape(self) -> tuple[Any, ...]:
        return ("or" if self.any_ else "and", tuple(node.shape() for node in self.nodes))


Node = Leaf | Group


@dataclass(frozen=True)
class Order:
    """``column`` is a session column, or ``"meta"`` with the key in parameter ``order_key``."""

    column: Literal["session_id", "created_at", "updated_at", "meta"]
    descending: bool
    fingerprint: str


@dataclass(frozen=True)
class Plan:
    """A checked query: the driving condition (if any), the rest, the order, the parameters."""

    # A positive condition, or an OR of them, whose index ranges are the FROM.
    driver: Leaf | Group | None
    rest: Group
    order: Order
    after: bool
    params: dict[str, Any]

    def shape(self) -> tuple[Any, ...]:
        driver = self.driver.shape() if self.driver else None
        order = (self.order.column, self.order.descending)
        return (driver, self.rest.shape(), order, self.after)


class _Params:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return name


def _encoded_hash(spec: ModelSpec[Any], field: FieldSpec, value: Any) -> str:
    (row,) = encode_model(spec, spec.validate_values({field.key: value}))
    return row.value_hash


def _encoded_sort_key(spec: ModelSpec[Any], field: FieldSpec, value: Any) -> str:
    if value is None:
        raise FilterError(f"key {field.key!r}: cannot compare with None; use 'missing' or 'eq'")
    (row,) = encode_model(spec, spec.validate_values({field.key: value}))
    if row.sort_key is None:
        raise FilterError(f"key {field.key!r}: value {value!r} has no order")
    return row.sort_key


def _encoded_item(spec: ModelSpec[Any], field: FieldSpec, element: Any) -> str:
    # Validated as a one-element collection of the field's type, so the element is
    # coerced and serialized exactly as elements of stored values are.
    validated = spec.validate_values({field.key: [element]})
    (item,) = item_hashes(getattr(validated, field.name))
    return item


def _refuse_encrypted(spec: ModelSpec[Any], field: FieldSpec, what: str) -> None:
    if field.encrypted:
        raise FilterError(
            f"key {field.key!r}: {spec.name}.{field.name} is Encrypted(): {what} would need "
            "its plaintext in the database; encrypted fields answer equality only "
            "('eq', 'ne', 'in', 'not_in', 'exists', 'missing')"
        )


def _values_of(condition: Condition) -> list[Any]:
    value = condition.value
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise FilterError(
            f"key {condition.key!r}: {condition.op!r} takes a list of values, got {value!r}"
        )
    return list(value)


def _leaf(spec: ModelSpec[Any], condition: Condition, params: _Params, arrays: bool) -> Node:
    if not isinstance(condition.op, str) or condition.op not in OPERATORS:
        raise FilterError(
            f"key {condition.key!r}: unknown operator {condition.op!r}; "
            f"use one of {', '.join(sorted(OPERATORS))}"
        )
    field = spec.field(condition.key)
    op: str = condition.op
    negated = op in _NEGATIONS
    base = _NEGATIONS.get(op, op)
    if base in ("exists",):
        if condition.value is not None:
            raise FilterError(f"key {field.key!r}: {op!r} takes no value, got {condition.value!r}")
        return Leaf("exists", negated, params.add(field.key))
    if base == "eq":
        hashed = _encoded_hash(spec, field, condition.value)
        return Leaf("eq", negated, params.add(field.key), (params.add(hashed),))
    if base == "in":
        hashes = {_encoded_hash(spec, field, value) for value in _values_of(condition)}
        return _membership(negated, params.add(field.key), hashes, params, arrays)
    if base in ("contains", "gt", "ge", "lt", "le"):
        _refuse_encrypted(spec, field, f"{op!r}")
    if base == "contains":
        if field.kind != "collection":
            raise FilterError(
                f"key {field.key!r}: 'contains' needs a list or set field, "
                f"not {spec.name}.{field.name}"
            )
        item = _encoded_item(spec, field, condition.value)
        return Leaf("contains", negated, params.add(field.key), (params.add(item),))
    # gt, ge, lt, le
    if field.kind != "range":
        raise FilterError(
            f"key {field.key!r}: {op!r} needs an int, float, Decimal, date or datetime field; "
            f"{spec.name}.{field.name} has no such order"
        )
    sort_key = _encoded_sort_key(spec, field, condition.value)
    key_param = params.add(field.key)
    # The other end of the range: every sort key of a number, date or datetime starts
    # with a digit. Semantically a no-op, it lets a planner that keeps one histogram for
    # all keys' sort keys (PostgreSQL) estimate the range from this field's kind of value
    # instead of from every key's, e.g. all strings.
    bound = _DIGITS_END if op in ("gt", "ge") else _DIGITS_START
    return Leaf(
        "range",
        False,
        key_param,
        (params.add(sort_key), params.add(bound)),
        comparison=_RANGE_OPS[op],
    )


def _padded(values: list[str]) -> list[str]:
    """Pad to a power of two by repeating the last value: few statement shapes to compile."""
    size = 1
    while size < len(values):
        size *= 2
    return values + [values[-1]] * (size - len(values))


def _membership(
    negated: bool, key_param: str, hashes: set[str], params: _Params, arrays: bool
) -> Node:
    """``key`` holds (or, negated, does not hold) a value of one of these hashes."""
    if not hashes:
        # Nothing is in the empty set; everything is outside it.
        return Group(any_=not negated, nodes=())
    ordered = sorted(hashes)
    if len(ordered) == 1:
        return Leaf("eq", negated, key_param, (params.add(ordered[0]),))
    if arrays:
        return Leaf("in", negated, key_param, (params.add(ordered),), as_array=True)
    return Leaf("in", negated, key_param, tuple(params.add(h) for h in _padded(ordered)))


def _hashes(leaf: Leaf, params: _Params) -> set[str]:
    if leaf.as_array:
        return set(params.values[leaf.value_params[0]])
    return {params.values[name] for name in leaf.value_params}


def _merged(any_: bool, nodes: Iterable[Node], params: _Params, arrays: bool) -> Node:
    """The group with conditions on the same key combined into one, where that is exact.

    A session holds one value per key, so the ``eq``/``in`` conditions on one key are
    one set: ``k == a or k == b`` is ``k in {a, b}`` and ``k != a and k != b`` is
    ``k not in {a, b}``. Ranges on one key in one direction keep the tightest (AND)
    or loosest (OR) bound, and ``contains`` of several elements in an OR becomes one
    test of any element. Hundreds of conditions on a few keys then cost the database
    a few index probes per session, not hundreds.
    """
    kept: list[Node] = []
    sets: dict[tuple[str, bool], set[str]] = {}
    set_params: dict[tuple[str, bool], str] = {}
    bounds: dict[tuple[str, bool], Leaf] = {}
    elements: dict[str, set[str]] = {}
    element_params: dict[str, str] = {}
    for node in nodes:
        if not isinstance(node, Leaf) or node.kind == "exists":
            kept.append(node)
            continue
        key = params.values[node.key_param]
        if node.kind in ("eq", "in"):
            slot = (key, node.negated)
            hashes = _hashes(node, params)
            found = sets.get(slot)
            # Positives intersect in an AND and unite in an OR; negatives the other way.
            if found is None:
                sets[slot], set_params[slot] = hashes, node.key_param
            elif any_ != node.negated:
                found |= hashes
            else:
                found &= hashes
        elif node.kind == "range":
            upward = node.comparison.startswith(">")
            slot = (key, upward)
            other = bounds.get(slot)
            bounds[slot] = node if other is None else _bound(node, other, upward, any_, params)
        elif node.kind == "contains" and any_:
            element_params.setdefault(key, node.key_param)
            found_items = elements.setdefault(key, set())
            found_items.update(params.values[name] for name in node.value_params)
        else:
            kept.append(node)
    for (key, negated), hashes in sets.items():
        kept.append(_membership(negated, set_params[(key, negated)], hashes, params, arrays))
    for (key, upward), bound in bounds.items():
        other = None if any_ else bounds.get((key, not upward))
        if other is None:
            kept.append(bound)
        elif upward:
            # Both ends on one key (added once, from the lower end): one index range,
            # not two half-lines each matching most sessions, to intersect.
            ends = (bound.value_params[0], other.value_params[0])
            between = f"{bound.comparison},{other.comparison}"
            kept.append(Leaf("range", False, bound.key_param, ends, comparison=between))
    for key, items in elements.items():
        names = tuple(params.add(item) for item in _padded(sorted(items)))
        kept.append(Leaf("contains", False, element_params[key], names))
    return Group(any_=any_, nodes=tuple(kept))


def _bound(one: Leaf, other: Leaf, upward: bool, any_: bool, params: _Params) -> Leaf:
    """Of two ranges on one key in one direction, the tighter (AND) or the looser (OR)."""

    def at_least_as_tight(first: Leaf, second: Leaf) -> bool:
        # Sort keys order as the values do (binary collation); at equal keys a strict
        # comparison is the tighter.
        first_key = params.values[first.value_params[0]]
        second_key = params.values[second.value_params[0]]
        if first_key != second_key:
            return bool(first_key > second_key) if upward else bool(first_key < second_key)
        return first.comparison in (">", "<") or second.comparison in (">=", "<=")

    tight, loose = (one, other) if at_least_as_tight(one, other) else (other, one)
    return loose if any_ else tight


def _node(spec: ModelSpec[Any], item: Filter, params: _Params, arrays: bool) -> Node:
    if isinstance(item, Condition):
        return _leaf(spec, item, params, arrays)
    if isinstance(item, (AllOf, AnyOf)):
        nodes = (_node(spec, child, params, arrays) for child in item.filters)
        return _merged(isinstance(item, AnyOf), nodes, params, arrays)
    raise InvalidArgumentError(
        f"expected a Condition or all_of/any_of group, not {item!r} ({type(item).__name__})"
    )


def resolve_filters(
    spec: ModelSpec[Any], filters: Iterable[FilterArg], params: _Params, *, arrays: bool
) -> Group:
    """Check and encode ``filters`` (all must hold) into a tree of parameterized leaves."""
    flat = _flatten(filters)
    check_filter_size(flat)
    merged = _merged(False, (_node(spec, item, params, arrays) for item in flat), params, arrays)
    assert isinstance(merged, Group)
    return merged


def _positive_or(node: Node) -> bool:
    return (
        isinstance(node, Group)
        and node.any_
        and bool(node.nodes)
        and all(isinstance(child, Leaf) and not child.negated for child in node.nodes)
    )


def _split_driver(tree: Group) -> tuple[Leaf | Group | None, Group]:
    """Pick the positive top-level condition whose index drives the query best.

    Failing a single condition, an OR of positive conditions drives the query as
    the union of their index ranges, rather than testing every session.
    """
    candidates = [
        (index, node)
        for index, node in enumerate(tree.nodes)
        if isinstance(node, Leaf) and not node.negated
    ]
    if candidates:
        index, leaf = min(candidates, key=lambda pair: (_DRIVER_PREFERENCE[pair[1].kind], pair[0]))
        driver: Leaf | Group = leaf
    else:
        unions = [index for index, node in enumerate(tree.nodes) if _positive_or(node)]
        if not unions:
            return None, tree
        index = unions[0]
        driver = tree.nodes[index]
    rest = tree.nodes[:index] + tree.nodes[index + 1 :]
    return driver, Group(any_=False, nodes=rest)


def resolve_order(spec: ModelSpec[Any], order_by: OrderArg, params: _Params) -> Order:
    """Check ``order_by`` against the model; a metadata key's name becomes a parameter."""
    if isinstance(order_by, str):
        descending = order_by.startswith("-")
        order_by = OrderBy(order_by[1:] if descending else order_by, descending)
    if not isinstance(order_by, OrderBy):
        raise InvalidArgumentError(
            f'order_by must be a key name ("-" in front for descending) or an OrderBy, '
            f"not {order_by!r} ({type(order_by).__name__})"
        )
    direction = "d" if order_by.descending else "a"
    if not order_by.metadata and order_by.key in SESSION_COLUMNS:
        column: Any = order_by.key
        return Order(column, order_by.descending, f"{order_by.key}:{direction}")
    field = spec.field(order_by.key)
    _refuse_encrypted(spec, field, "ordering")
    if field.kind not in ("range", "scalar"):
        raise FilterError(
            f"cannot order by key {field.key!r}: {spec.name}.{field.name} is not a scalar field"
        )
    params.values["order_key"] = field.key
    return Order("meta", order_by.descending, f"m:{field.key}:{direction}")


MAX_LIMIT = 10_000


def check_limit(limit: object) -> int:
    """``limit`` if it is a page size the store serves: an integer from 1 to MAX_LIMIT."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError(
            f"limit must be an integer from 1 to {MAX_LIMIT:,}, not {limit!r}"
        )
    return limit


def plan_query(
    spec: ModelSpec[Any],
    filters: Iterable[FilterArg],
    *,
    order_by: OrderArg = "session_id",
    cursor: str | None = None,
    arrays: bool = False,
    scope: Mapping[str, Any] | None = None,
) -> Plan:
    """The checked plan of a find, listing or count; raises before any I/O."""
    params = _Params()
    scope_filters: list[FilterArg] = [dict(scope)] if scope else []
    tree = resolve_filters(spec, [*scope_filters, *filters], params, arrays=arrays)
    order = resolve_order(spec, order_by, params)
    driver, rest = _split_driver(tree)
    # Statements are compiled once per plan shape: the same shape must name the same
    # parameters, whatever conditions were combined on the way.
    renamed = _Params()
    renamed.values = {name: value for name, value in params.values.items() if name == "order_key"}
    keys: dict[str, str] = {}
    driver = None if driver is None else _renamed(driver, params, renamed, keys)
    rest = Group(False, tuple(_renamed(node, params, renamed, keys) for node in rest.nodes))
    _check_keys(renamed, keys)
    params = renamed
    after = cursor is not None
    if cursor is not None:
        value, session_id = decode_cursor(cursor, order.fingerprint)
        params.values["after_value"] = value
        params.values["after_session_id"] = session_id
    return Plan(driver, rest, order, after, params.values)


MAX_FILTER_KEYS = 10


def _check_keys(renamed: _Params, keys: dict[str, str]) -> None:
    """Refuse a query on more keys than the database can test in time.

    Each key a query tests costs up to one pass over that key's rows (a join, a
    semi-join or an anti-join) when no condition narrows the sessions first: about
    60-80 ms per key at 100,000 sessions (benchmarks/filter_limits.py).
    """
    if len(keys) > MAX_FILTER_KEYS:
        raise FilterError(
            f"a query tests at most {MAX_FILTER_KEYS} different keys; this one tests "
            f"{len(keys)}: {', '.join(sorted(keys))}"
        )


def _renamed(node: Node, old: _Params, new: _Params, keys: dict[str, str]) -> Node:
    """``node`` with its parameters named afresh, in the order of a walk of the tree;
    leaves on the same key share one key parameter (``keys``: key to its name)."""
    if isinstance(node, Group):
        return Group(node.any_, tuple(_renamed(child, old, new, keys) for child in node.nodes))
    key = old.values[node.key_param]
    if key not in keys:
        keys[key] = new.add(key)
    return replace(
        node,
        key_param=keys[key],
        value_params=tuple(new.add(old.values[name]) for name in node.value_params),
    )


def encode_cursor(order: Order, sort_value: Any, session_id: str) -> str:
    """An opaque cursor after the row (``sort_value``, ``session_id``) of this order."""
    if isinstance(sort_value, dt.datetime):
        tagged: list[Any] = ["t", sort_value.isoformat()]
    elif sort_value is None or isinstance(sort_value, str):
        tagged = ["s", sort_value]
    else:
        tagged = ["s", str(sort_value)]
    text = json.dumps([order.fingerprint, tagged, session_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, fingerprint: str) -> tuple[Any, str]:
    """The (sort value, session id) a cursor continues after; checks it fits the order."""
    if not isinstance(cursor, str):
        raise InvalidCursorError(
            f"a cursor is the string of a page's next_cursor, not {cursor!r} "
            f"({type(cursor).__name__})"
        )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        made_for, (tag, value), session_id = json.loads(base64.urlsafe_b64decode(padded))
        # Everything a cursor carries is checked: a forged one must not reach the database.
        if tag not in ("t", "s") or not isinstance(made_for, str):
            raise ValueError("unexpected content")
        if not isinstance(value, str) and not (tag == "s" and value is None):
            raise ValueError("unexpected sort value")
        check_session_id(session_id)
        if tag == "t" and isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursorError(f"cursor {cursor[:60]!r} is not one this library made") from exc
    if made_for != fingerprint:
        raise InvalidCursorError(
            f"cursor {cursor[:60]!r} was made for order {made_for!r}, not {fingerprint!r}"
        )
    return value, session_id
