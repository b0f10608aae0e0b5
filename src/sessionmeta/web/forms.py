"""The admin pages' forms, built from the metadata model: no database, no I/O.

Each declared field becomes a :class:`FormField`: the input that edits it (a select for
``Literal``, ``Enum`` and ``bool``, a number, a date, one line per item of a list of
text, JSON for anything else), the operators its filter offers (those of the query
API that its type supports) and whether the list can be ordered by it. Form text
goes back to values here, untouched by any rule of our own: the store validates
them with the model, exactly as an API call would.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import types
import typing
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from sessionmeta.core.filters import Condition, Operator, OrderBy
from sessionmeta.core.spec import FieldSpec, ModelSpec

__all__ = [
    "FilterRow",
    "FormField",
    "Widget",
    "conditions_from_query",
    "form_fields",
    "input_text",
    "orders",
    "type_name",
    "value_from_input",
]

Widget = Literal["text", "number", "date", "datetime", "select", "tags", "json"]

# The session columns any listing can be ordered by, before the model's own fields.
SESSION_ORDERS = ("session_id", "created_at", "updated_at")


@dataclass(frozen=True)
class FormField:
    """How one declared field is shown, edited and filtered on the admin pages."""

    key: str
    name: str
    type_name: str
    widget: Widget
    # For a select: each choice's stored JSON text, with its label.
    choices: tuple[tuple[str, str], ...] = ()
    # The number input's step: "1" for integers, "any" otherwise.
    step: str = "any"
    operators: tuple[Operator, ...] = ("exists", "missing")
    orderable: bool = False

    @property
    def default_operator(self) -> Operator:
        """The operator a filter value given without one means: contains, or equals."""
        return "contains" if self.widget == "tags" else "eq"


def _alternatives(annotation: Any) -> list[Any]:
    """The members of ``annotation`` without ``None`` and ``Annotated`` wrappers."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [
            member
            for arg in typing.get_args(annotation)
            if arg is not type(None)
            for member in _alternatives(arg)
        ]
    return [annotation]


def type_name(annotation: Any) -> str:
    """The declared type as it reads in Python: ``list[str] | None``, ``Literal['a', 'b']``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    if origin is Literal:
        return f"Literal[{', '.join(repr(arg) for arg in typing.get_args(annotation))}]"
    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "Any"
    if annotation is Ellipsis:
        return "..."
    if origin is not None:
        args = ", ".join(type_name(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _choices(member: Any) -> tuple[tuple[str, str], ...] | None:
    if typing.get_origin(member) is Literal:
        values = typing.get_args(member)
    elif isinstance(member, type) and issubclass(member, bool):
        values = (True, False)
    elif isinstance(member, type) and issubclass(member, enum.Enum):
        values = tuple(item.value for item in member)
    else:
        return None
    if not all(isinstance(value, (str, int, bool)) for value in values):
        return None
    # Labels as the stored JSON reads: true and false, not True and False.
    return tuple(
        (json.dumps(value), json.dumps(value) if isinstance(value, bool) else str(value))
        for value in values
    )


def _widget(spec: FieldSpec, annotation: Any) -> tuple[Widget, tuple[tuple[str, str], ...], str]:
    members = _alternatives(annotation)
    if len(members) != 1:
        return "json", (), "any"
    (member,) = members
    choices = _choices(member)
    if choices is not None:
        return "select", choices, "any"
    if spec.kind == "collection":
        items = typing.get_args(member)
        if items and all(_alternatives(item) == [str] for item in items if item is not Ellipsis):
            return "tags", (), "any"
        return "json", (), "any"
    if isinstance(member, type):
        if issubclass(member, dt.datetime):
            return "datetime", (), "any"
        if issubclass(member, dt.date):
            return "date", (), "any"
        if issubclass(member, int):
            return "number", (), "1"
        if issubclass(member, (float, Decimal)):
            return "number", (), "any"
        if issubclass(member, (str, uuid.UUID)):
            return "text", (), "any"
    return "json", (), "any"


_OPERATORS: dict[str, tuple[Operator, ...]] = {
    "range": ("eq", "ne", "gt", "ge", "lt", "le", "exists", "missing"),
    "scalar": ("eq", "ne", "in", "not_in", "exists", "missing"),
    "collection": ("contains", "exists", "missing"),
    "other": ("exists", "missing"),
}


def form_fields(spec: ModelSpec[Any]) -> list[FormField]:
    """Every declared field of the model, in declaration order."""
    found = []
    for key, field in spec.fields.items():
        annotation = spec.model.model_fields[field.name].annotation
        widget, choices, step = _widget(field, annotation)
        operators = _OPERATORS[field.kind]
        if widget == "select":
            # A select picks one value: equality, its negation, presence.
            operators = ("eq", "ne", "exists", "missing")
        found.append(
            FormField(
                key=key,
                name=field.name,
                type_name=type_name(annotation),
                widget=widget,
                choices=choices,
                step=step,
                operators=operators,
                orderable=field.kind in ("range", "scalar"),
            )
        )
    return found


def orders(fields: Iterable[FormField]) -> list[tuple[str, str]]:
    """Every order the list offers, as ``(order_by argument, label)``."""
    keys = [(name, name) for name in SESSION_ORDERS]
    # A metadata key named like a session column is ordered as the metadata key.
    keys += [(f"key:{field.key}", field.key) for field in fields if field.orderable]
    found = []
    for value, label in keys:
        found.append((value, f"{label} ↑"))
        found.append((f"-{value}", f"{label} ↓"))
    return found


def order_argument(value: str) -> str | OrderBy:
    """What ``list_sessions(order_by=...)`` takes for an order the page offered."""
    descending = value.startswith("-")
    name = value.removeprefix("-")
    if name.startswith("key:"):
        return OrderBy(name.removeprefix("key:"), descending=descending, metadata=True)
    return value


# ---- form text and values -----------------------------------------------------------


def input_text(field: FormField, stored_text: str | None) -> str:
    """What the edit form's input shows for a stored JSON text (blank when nothing is)."""
    if stored_text is None:
        return ""
    try:
        value = json.loads(stored_text)
    except ValueError:
        return stored_text
    if value is None:
        return ""
    if field.widget == "select":
        return json.dumps(value)
    if field.widget == "tags" and isinstance(value, list):
        return "\n".join(str(item) for item in value)
    if field.widget == "json" or isinstance(value, (dict, list)):
        return json.dumps(value, indent=2, ensure_ascii=False)
    if isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def same_text(left: str, right: str) -> bool:
    """Whether two inputs say the same (browsers send a textarea's newlines as CRLF)."""
    return left.replace("\r\n", "\n").strip() == right.replace("\r\n", "\n").strip()


def value_from_input(field: FormField, text: str) -> Any:
    """The value a submitted input means, for the model to validate: blank is ``None``.

    A select's choice and a JSON input are read as JSON (text that is not JSON goes
    on as it is, for the model to refuse); a list of text has one item per line;
    everything else goes on as the text typed, which the field's type parses.
    """
    text = text.replace("\r\n", "\n")
    if not text.strip():
        return None
    if field.widget in ("select", "json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    if field.widget == "tags":
        return [line.strip() for line in text.split("\n") if line.strip()]
    return text.strip()


# ---- filters from the list page's query string --------------------------------------


@dataclass(frozen=True)
class FilterRow:
    """One field's filter as the list page's form holds it."""

    field: FormField
    op: str
    value: str
    # For datetimes: "Z" reads the picker's time as UTC, "" as a naive datetime.
    zone: str = "Z"


def filter_rows(fields: Sequence[FormField], query: Mapping[str, str]) -> list[FilterRow]:
    """Each field's filter inputs (``op:KEY``, ``v:KEY``, ``tz:KEY``) as submitted."""
    return [
        FilterRow(
            field,
            query.get(f"op:{field.key}", ""),
            query.get(f"v:{field.key}", ""),
            query.get(f"tz:{field.key}", "Z"),
        )
        for field in fields
    ]


def _filter_value(field: FormField, text: str, zone: str) -> Any:
    if field.widget == "select":
        try:
            return json.loads(text)
        except ValueError:
            return text
    if field.widget == "datetime" and zone == "Z" and text:
        return text + "Z"
    return text


def conditions_from_query(rows: Iterable[FilterRow]) -> list[Condition]:
    """The conditions the filter inputs ask for; a row with neither operator nor value asks
    for none. A value without an operator means equality (``contains`` for a list of
    text); a list of text's comma-separated values must all be there; ``in`` and
    ``not_in`` take comma-separated values. The store validates every value."""
    conditions: list[Condition] = []
    for row in rows:
        field, text = row.field, row.value.strip()
        op = row.op or (field.default_operator if text else "")
        if not op:
            continue
        if op not in field.operators:
            # Passed on: the query API names what the field cannot answer.
            conditions.append(Condition(field.key, typing.cast(Operator, op), text))
            continue
        operator: Operator = op
        if operator in ("exists", "missing"):
            conditions.append(Condition(field.key, operator))
        elif operator in ("in", "not_in"):
            values = [_filter_value(field, part.strip(), row.zone) for part in text.split(",")]
            conditions.append(Condition(field.key, operator, values))
        elif operator == "contains":
            for part in text.split(","):
                conditions.append(Condition(field.key, "contains", part.strip()))
        else:
            conditions.append(Condition(field.key, operator, _filter_value(field, text, row.zone)))
    return conditions
