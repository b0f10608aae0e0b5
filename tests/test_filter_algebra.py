"""Generated filter trees agree with Python evaluating the same filters.

Conditions on one key are combined before the SQL is built (``k != a and k != b``
becomes ``k not in {a, b}``, the tighter of two ranges is kept, and so on); these
trees are built to hit every combination, nested, so a wrong combination shows as a
session found or lost.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import create_model
from sqlalchemy.ext.asyncio import AsyncEngine

from sessionmeta import (
    AnyOf,
    Condition,
    Filter,
    FilterError,
    MetadataStore,
    SessionMeta,
    all_of,
    any_of,
    field,
)
from sessionmeta.core.plan import MAX_FILTER_KEYS

from .models import ChatMeta

ROUNDS = 300
PRIORITIES = [None, 0, 1, 2, 3]
OWNERS = [None, "u1", "u2", "u3"]
TAG_LISTS = [None, [], ["a"], ["b"], ["a", "b"], ["c", "a"]]


def sessions() -> dict[str, dict[str, Any]]:
    """Every combination of the three keys, each missing or one of its values (not all missing)."""
    found: dict[str, dict[str, Any]] = {}
    number = 0
    for priority in [*PRIORITIES, "missing"]:
        for owner in [*OWNERS, "missing"]:
            for tags in [*TAG_LISTS, "missing"]:
                values = {"priority": priority, "owner_id": owner, "tags": tags}
                stored = {k: v for k, v in values.items() if v != "missing"}
                if stored:  # a session is made by its first write
                    found[f"s{number:03d}"] = stored
                    number += 1
    return found


def holds(condition: Condition, values: dict[str, Any]) -> bool:
    key, op, target = condition.key, condition.op, condition.value
    present = key in values
    value = values.get(key)
    if op == "exists":
        return present
    if op == "missing":
        return not present
    if op == "eq":
        return present and value == target
    if op == "ne":
        return not (present and value == target)
    if op == "in":
        return present and value in target
    if op == "not_in":
        return not (present and value in target)
    if op == "contains":
        return present and value is not None and target in value
    if not present or value is None:
        return False
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "gt": lambda a, b: a > b,
        "ge": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "le": lambda a, b: a <= b,
    }
    return comparisons[op](value, target)


def matches(item: Filter, values: dict[str, Any]) -> bool:
    if isinstance(item, Condition):
        return holds(item, values)
    children = [matches(child, values) for child in item.filters]
    return any(children) if isinstance(item, AnyOf) else all(children)


def random_condition(rng: random.Random) -> Condition:
    op: Any
    key = rng.choice(["priority", "priority", "owner_id", "tags"])
    if key == "tags":
        op = rng.choice(["contains", "contains", "exists", "missing"])
        value = rng.choice(["a", "b", "c", "d"]) if op == "contains" else None
        return Condition(key, op, value)
    if key == "priority":
        op = rng.choice(["eq", "ne", "in", "not_in", "gt", "ge", "lt", "le", "exists", "missing"])
        pool: list[Any] = [0, 1, 2, 3, 4]
    else:
        op = rng.choice(["eq", "ne", "in", "not_in", "exists", "missing"])
        pool = ["u1", "u2", "u3", "u4"]
    if op in ("exists", "missing"):
        return Condition(key, op)
    if op in ("in", "not_in"):
        return Condition(key, op, rng.sample(pool, rng.randint(0, 3)))
    if op in ("eq", "ne") and rng.random() < 0.15:
        return Condition(key, op, None)
    return Condition(key, op, rng.choice(pool))


def random_tree(rng: random.Random, depth: int = 0) -> Filter:
    if depth >= 3 or rng.random() < 0.35:
        return random_condition(rng)
    children = [random_tree(rng, depth + 1) for _ in range(rng.randint(1, 6))]
    return any_of(*children) if rng.random() < 0.5 else all_of(*children)


def every_pair() -> list[Filter]:
    """Each pair of conditions on one key, in an AND and in an OR: every combination."""
    conditions = [
        *(Condition("priority", op, value) for op in ("eq", "ne") for value in (1, 2, None)),
        *(Condition("priority", op, value) for op in ("gt", "ge", "lt", "le") for value in (1, 2)),
        *(Condition("priority", op, [1, 2]) for op in ("in", "not_in")),
        Condition("priority", "exists"),
        Condition("tags", "contains", "a"),
        Condition("tags", "contains", "b"),
    ]
    return [
        group(first, second)
        for first in conditions
        for second in conditions
        if first.key == second.key
        for group in (all_of, any_of)
    ]


async def test_generated_filters_find_what_python_finds(store: MetadataStore[ChatMeta]) -> None:
    data = sessions()
    for session_id, values in data.items():
        await store.bind(session_id).set_metadata(values)
    rng = random.Random(20261130)
    for tree in [*every_pair(), *(random_tree(rng) for _ in range(ROUNDS))]:
        expected = sorted(sid for sid, values in data.items() if matches(tree, values))
        found = list(await store.find_sessions(tree, limit=1000))
        assert found == expected, tree
        assert await store.count_sessions(tree) == len(expected), tree


Wide = create_model(  # type: ignore[call-overload]
    "Wide",
    __base__=SessionMeta,
    **{f"k{index:02d}": (int | None, None) for index in range(MAX_FILTER_KEYS + 1)},
)


async def test_the_keys_of_one_query_are_limited_before_any_query(engine: AsyncEngine) -> None:
    store: MetadataStore[Any] = MetadataStore(Wide, engine, create_tables=True)
    await store.bind("s").set_metadata({"k00": 1, f"k{MAX_FILTER_KEYS - 1:02d}": 2})
    within = any_of(*(field(f"k{index:02d}") != 1 for index in range(MAX_FILTER_KEYS)))
    assert list(await store.find_sessions(within)) == ["s"]
    # However many conditions: 200 on two keys are two keys.
    many = [field("k00") != index for index in range(2, 102)]
    many += [field("k01") != index for index in range(100)]
    assert list(await store.find_sessions(*many)) == ["s"]
    beyond = [field(f"k{index:02d}") != 1 for index in range(MAX_FILTER_KEYS + 1)]
    for query in (beyond, [any_of(*beyond)], [field("k00") == 1, *beyond]):
        with pytest.raises(FilterError, match=f"at most {MAX_FILTER_KEYS} different keys"):
            await store.count_sessions(*query)
